//! One test per message: it round-trips, shares the frame buffer instead of
//! copying, obeys its limits on both sides, and refuses each way its payload
//! can be malformed with an error naming the field.

mod common;

use bytes::Bytes;
use common::{raw_frame, samples};
use hydracache_protocol::{
    Entry, ErrorCode, Features, Fetch, FetchReply, Field, Fill, Flags, Frame, Hello, HighWater,
    Invalidate, Kind, Limits, Load, LoadReply, Member, Message, MetadataSnapshot, NodeIdentity,
    OwnerLoad, OwnerLoadReply, ProtocolError, Put, PutReply, Recovery, Role, Target, VersionRange,
    HEADER_LEN,
};

fn limits() -> Limits {
    Limits::default()
}

fn round_trip(frame: &Frame) -> (Bytes, Frame) {
    let wire = frame.to_bytes(&limits()).unwrap();
    let decoded = Frame::decode_exact(wire.clone(), &limits()).unwrap();
    assert_eq!(&decoded, frame);
    (wire, decoded)
}

fn message(kind: Kind, payload: &[u8]) -> Result<Message, ProtocolError> {
    Frame::decode_exact(raw_frame(kind as u8, 0, 0, payload), &limits()).map(|f| f.message)
}

fn assert_within(wire: &Bytes, part: &[u8]) {
    let range = wire.as_ptr_range();
    assert!(
        part.is_empty() || range.contains(&part.as_ptr()),
        "decoded bytes were copied out of the frame"
    );
}

fn assert_malformed(result: Result<Message, ProtocolError>, field: Field) {
    match result {
        Err(ProtocolError::Malformed { field: f, .. }) if f == field => {}
        other => panic!("expected malformed {field}, got {other:?}"),
    }
}

fn assert_over_limit(result: Result<Message, ProtocolError>, field: Field) {
    match result {
        Err(ProtocolError::LengthOverLimit { field: f, .. }) if f == field => {}
        other => panic!("expected {field} over limit, got {other:?}"),
    }
}

#[test]
fn every_sample_round_trips_and_every_kind_is_sampled() {
    let mut kinds = Vec::new();
    for s in samples() {
        round_trip(&s.frame);
        kinds.push(s.frame.message.kind());
    }
    for kind in Kind::ALL {
        assert!(kinds.contains(&kind), "no sample for {kind}");
    }
}

#[test]
fn hello_and_hello_ack() {
    let hello = Hello::new("orders", ("api-1", 5), Role::Member);
    let (_, f) = round_trip(&Frame::new(0, Message::Hello(hello.clone())));
    assert_eq!(f.message.kind(), Kind::Hello);
    round_trip(&Frame::new(0, Message::HelloAck(hello)));

    // min version, max version, role, features, cluster, generation, node id
    let mut payload = vec![1, 1, 0];
    payload.extend_from_slice(&Features::KNOWN.0.to_le_bytes());
    payload.extend_from_slice(&[6, 0]);
    payload.extend_from_slice(b"orders");
    payload.extend_from_slice(&5u64.to_le_bytes());
    payload.extend_from_slice(&[5, 0]);
    payload.extend_from_slice(b"api-1");
    assert!(message(Kind::Hello, &payload).is_ok());

    let mut bad = payload.clone();
    bad[0] = 2; // min > max
    assert_malformed(message(Kind::Hello, &bad), Field::VersionRange);
    let mut bad = payload.clone();
    bad[0] = 0; // version 0
    assert_malformed(message(Kind::Hello, &bad), Field::VersionRange);
    let mut bad = payload.clone();
    bad[2] = 2; // role
    assert_malformed(message(Kind::Hello, &bad), Field::Role);
    let mut bad = payload.clone();
    bad[13] = 0xff; // invalid UTF-8 in the cluster name
    assert_malformed(message(Kind::Hello, &bad), Field::ClusterName);
    let mut bad = payload.clone();
    bad[11] = 0xff; // cluster name length 255 runs past the end
    assert_malformed(message(Kind::Hello, &bad), Field::ClusterName);

    let long = Hello::new("c".repeat(256), ("n", 1), Role::Client);
    assert!(matches!(
        Frame::new(0, Message::Hello(long)).to_bytes(&limits()),
        Err(ProtocolError::LengthOverLimit {
            field: Field::ClusterName,
            ..
        })
    ));
}

#[test]
fn ping_and_pong() {
    round_trip(&Frame::new(1, Message::Ping { nonce: u64::MAX }));
    round_trip(&Frame::new(1, Message::Pong { nonce: 0 }));
    assert_malformed(message(Kind::Ping, &[1, 2, 3]), Field::Nonce);
    assert!(matches!(
        message(Kind::Pong, &[0; 9]),
        Err(ProtocolError::TrailingBytes {
            kind: Kind::Pong,
            count: 1
        })
    ));
}

#[test]
fn error_and_go_away() {
    let (wire, f) = round_trip(&Frame::new(
        3,
        Message::Error {
            code: ErrorCode(4242),
            message: "from a newer peer".into(),
        },
    ));
    let Message::Error {
        code,
        message: text,
    } = f.message
    else {
        unreachable!()
    };
    assert_eq!(code.to_string(), "4242");
    assert_within(&wire, text.as_bytes());
    round_trip(&Frame::new(
        0,
        Message::GoAway {
            code: ErrorCode::NONE,
            message: "".into(),
        },
    ));
    assert_malformed(
        message(Kind::GoAway, &[0, 0, 2, 0, 0xc3, 0x28]),
        Field::Message,
    );
}

#[test]
fn invalidate_every_target() {
    let origin = NodeIdentity::new("api-1", 5);
    let targets = [
        Target::Key(Bytes::from_static(b"k")),
        Target::Keys(vec![Bytes::from_static(b"a"), Bytes::new()]),
        Target::Tag(Bytes::from_static(b"t")),
        Target::Tags(vec![]),
        Target::Flush,
    ];
    for target in targets {
        let frame = Frame::new(
            0,
            Message::Invalidate(Invalidate {
                origin: origin.clone(),
                sequence: 9,
                epoch: 3,
                target,
            }),
        )
        .with_flags(Flags::ACK_REQUESTED);
        let (wire, f) = round_trip(&frame);
        assert!(f.flags.contains(Flags::ACK_REQUESTED));
        let Message::Invalidate(inv) = f.message else {
            unreachable!()
        };
        assert_within(&wire, inv.origin.id.as_bytes());
        if let Target::Key(key) = &inv.target {
            assert_within(&wire, key);
        }
    }
}

#[test]
fn invalidate_limits_and_malformed_targets() {
    let small = Limits {
        max_batch_len: 2,
        max_tags: 1,
        ..Limits::default()
    };
    let inv = |target| {
        Frame::new(
            0,
            Message::Invalidate(Invalidate {
                origin: NodeIdentity::new("n", 1),
                sequence: 1,
                epoch: 1,
                target,
            }),
        )
    };
    let three = Target::Keys(vec![Bytes::new(), Bytes::new(), Bytes::new()]);
    assert!(matches!(
        inv(three.clone()).to_bytes(&small),
        Err(ProtocolError::LengthOverLimit {
            field: Field::Keys,
            len: 3,
            limit: 2
        })
    ));
    let wire = inv(three).to_bytes(&limits()).unwrap();
    assert!(matches!(
        Frame::decode_exact(wire, &small),
        Err(ProtocolError::LengthOverLimit {
            field: Field::Keys,
            ..
        })
    ));
    let two_tags = Target::Tags(vec![Bytes::new(), Bytes::new()]);
    assert!(matches!(
        inv(two_tags).to_bytes(&small),
        Err(ProtocolError::LengthOverLimit {
            field: Field::Tags,
            ..
        })
    ));

    // origin (generation, id "n"), sequence, epoch, then the target byte.
    let mut payload = 1u64.to_le_bytes().to_vec();
    payload.extend_from_slice(&[1, 0, b'n']);
    payload.extend_from_slice(&[0; 16]);
    let mut bad = payload.clone();
    bad.push(5);
    assert_malformed(message(Kind::Invalidate, &bad), Field::Target);
    let mut bad = payload.clone();
    bad.extend_from_slice(&[1, 0xff, 0x03]); // 1023 keys, no bytes for them
    assert_malformed(message(Kind::Invalidate, &bad), Field::Keys);
    let mut bad = payload;
    bad.extend_from_slice(&[4, 0]); // flush, then a stray byte
    assert!(matches!(
        message(Kind::Invalidate, &bad),
        Err(ProtocolError::TrailingBytes {
            kind: Kind::Invalidate,
            count: 1
        })
    ));
}

#[test]
fn invalidate_ack() {
    round_trip(&Frame::new(
        0,
        Message::InvalidateAck {
            origin_generation: 5,
            sequence: 1001,
        },
    ));
    assert_malformed(message(Kind::InvalidateAck, &[0; 12]), Field::Sequence);
}

#[test]
fn high_water() {
    let mark = HighWater {
        origin: NodeIdentity::new("api-1", 5),
        sequence: 1001,
    };
    round_trip(&Frame::new(0, Message::HighWater(mark.clone())));
    let mut payload = Vec::new();
    payload.extend_from_slice(&5u64.to_le_bytes());
    payload.extend_from_slice(&[5, 0]);
    payload.extend_from_slice(b"api-1");
    let identity_len = payload.len();
    payload.extend_from_slice(&1001u64.to_le_bytes());
    assert_eq!(
        message(Kind::HighWater, &payload).unwrap(),
        Message::HighWater(mark)
    );
    // The sequence cut short, or a byte after it.
    assert_malformed(
        message(Kind::HighWater, &payload[..identity_len + 4]),
        Field::Sequence,
    );
    payload.push(0);
    assert!(matches!(
        message(Kind::HighWater, &payload),
        Err(ProtocolError::TrailingBytes {
            kind: Kind::HighWater,
            count: 1
        })
    ));
}

#[test]
fn fetch() {
    let key = Bytes::from(vec![b'k'; 4096]);
    let (wire, f) = round_trip(&Frame::new(
        42,
        Message::Fetch(Fetch {
            epoch: 12,
            key: key.clone(),
        }),
    ));
    let Message::Fetch(fetch) = f.message else {
        unreachable!()
    };
    assert_within(&wire, &fetch.key);

    let too_long = Message::Fetch(Fetch {
        epoch: 12,
        key: Bytes::from(vec![b'k'; 4097]),
    });
    assert!(matches!(
        Frame::new(0, too_long).to_bytes(&limits()),
        Err(ProtocolError::LengthOverLimit {
            field: Field::Key,
            len: 4097,
            limit: 4096
        })
    ));
    let mut payload = 12u64.to_le_bytes().to_vec();
    payload.extend_from_slice(&4097u16.to_le_bytes());
    assert_over_limit(message(Kind::Fetch, &payload), Field::Key);
}

#[test]
fn fetch_reply_every_status() {
    let value = Bytes::from(vec![0x5a; 1000]);
    let replies = [
        FetchReply::Hit(Entry::new(value.clone()).with_ttl_ms(0)),
        FetchReply::Hit(Entry::new(Bytes::new())),
        FetchReply::Miss,
        FetchReply::WrongOwner { epoch: 13 },
        FetchReply::StaleGeneration {
            current_generation: 6,
        },
    ];
    for reply in replies {
        let (wire, f) = round_trip(&Frame::new(42, Message::FetchReply(reply)));
        if let Message::FetchReply(FetchReply::Hit(entry)) = f.message {
            assert_within(&wire, &entry.value);
            let offset = entry.value.as_ptr() as usize - wire.as_ptr() as usize;
            assert_eq!(offset % 16, 0, "value not at an aligned frame offset");
        }
    }
    assert_malformed(message(Kind::FetchReply, &[4]), Field::Status);
    assert_malformed(message(Kind::FetchReply, &[0, 2]), Field::Ttl);
}

#[test]
fn entries_refuse_too_many_or_too_long_tags_and_bad_padding() {
    let many = Entry::new(Bytes::new()).with_tags((0..65).map(|_| Bytes::new()));
    assert!(matches!(
        Frame::new(0, Message::FetchReply(FetchReply::Hit(many))).to_bytes(&limits()),
        Err(ProtocolError::LengthOverLimit {
            field: Field::Tags,
            len: 65,
            limit: 64
        })
    ));
    let long = Entry::new(Bytes::new()).with_tags([Bytes::from(vec![b't'; 257])]);
    assert!(matches!(
        Frame::new(0, Message::FetchReply(FetchReply::Hit(long))).to_bytes(&limits()),
        Err(ProtocolError::LengthOverLimit {
            field: Field::Tag,
            len: 257,
            limit: 256
        })
    ));

    // status, no ttl, no tags, value length 1; payload offset 20 + 8 = 28, so
    // 4 padding bytes reach offset 32.
    let good = [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xaa];
    assert!(message(Kind::FetchReply, &good).is_ok());
    let mut bad = good;
    bad[9] = 1;
    assert_malformed(message(Kind::FetchReply, &bad), Field::Padding);
    assert_malformed(message(Kind::FetchReply, &good[..12]), Field::Value);
}

#[test]
fn load_and_load_reply() {
    round_trip(&Frame::new(
        43,
        Message::Load(Load {
            epoch: 12,
            key: Bytes::from_static(b"report:7"),
            tags: vec![Bytes::from_static(b"users")],
        }),
    ));
    for reply in [
        LoadReply::Hit(Entry::new(Bytes::from_static(b"v")).with_ttl_ms(5)),
        LoadReply::Granted { token: 77 },
        LoadReply::Wait { retry_after_ms: 50 },
        LoadReply::WrongOwner { epoch: 13 },
        LoadReply::Failed {
            node: "m2".into(),
            message: "db timeout".into(),
        },
        LoadReply::Loaded(Entry::new(Bytes::from_static(b"v"))),
    ] {
        round_trip(&Frame::new(43, Message::LoadReply(reply)));
    }
    assert_malformed(message(Kind::LoadReply, &[9]), Field::Status);
    assert_malformed(message(Kind::LoadReply, &[2, 1, 2]), Field::RetryAfter);
    // A failure's node id is a name: over max_name_len it is refused.
    let mut long = vec![4, 0xff, 0xff];
    long.extend(std::iter::repeat_n(b'n', 0xffff));
    long.extend([0, 0]);
    assert!(message(Kind::LoadReply, &long).is_err());
    // A Load without its tag count is truncated.
    let mut load = 12u64.to_le_bytes().to_vec();
    load.extend([1, 0, b'k']);
    assert!(message(Kind::Load, &load).is_err());
    load.extend([0, 0]);
    assert!(message(Kind::Load, &load).is_ok());
}

#[test]
fn abandon() {
    round_trip(&Frame::new(
        44,
        Message::Abandon(hydracache_protocol::Abandon {
            token: 77,
            key: Bytes::from_static(b"report:7"),
            message: "loader panicked: boom".into(),
        }),
    ));
    let mut bad = 77u64.to_le_bytes().to_vec();
    bad.extend([1, 0, b'k', 2, 0, 0xff, 0xfe]);
    assert!(
        message(Kind::Abandon, &bad).is_err(),
        "the message must be UTF-8"
    );
}

#[test]
fn fill() {
    let (wire, f) = round_trip(&Frame::new(
        44,
        Message::Fill(Fill {
            token: 77,
            key: Bytes::from_static(b"report:7"),
            entry: Entry::new(Bytes::from(vec![1; 300])).with_tags([Bytes::from_static(b"r")]),
        }),
    ));
    let Message::Fill(fill) = f.message else {
        unreachable!()
    };
    assert_within(&wire, &fill.entry.value);
    assert_within(&wire, &fill.entry.tags[0]);
    assert_malformed(message(Kind::Fill, &[0; 7]), Field::Token);
}

#[test]
fn put_and_reply() {
    let (wire, f) = round_trip(&Frame::new(
        46,
        Message::Put(Put {
            epoch: 3,
            key: Bytes::from_static(b"user:1"),
            entry: Entry::new(Bytes::from(vec![1; 300])).with_tags([Bytes::from_static(b"u")]),
        }),
    ));
    let Message::Put(put) = f.message else {
        unreachable!()
    };
    assert_within(&wire, &put.entry.value);
    assert_malformed(message(Kind::Put, &[0; 7]), Field::Epoch);
    for reply in [
        PutReply::Stored { sequence: 1 },
        PutReply::WrongOwner { epoch: 2 },
        PutReply::Unacknowledged {
            sequence: 3,
            nodes: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
        },
    ] {
        let (_, f) = round_trip(&Frame::new(46, Message::PutReply(reply.clone())));
        assert_eq!(f.message, Message::PutReply(reply));
    }
    assert_malformed(message(Kind::PutReply, &[9]), Field::Status);
    assert_malformed(message(Kind::PutReply, &[0, 1, 2]), Field::Sequence);
}

#[test]
fn owner_load_and_reply() {
    let call = OwnerLoad {
        epoch: 12,
        loader: "user_by_id".into(),
        key: Bytes::from_static(b"user:42"),
        ttl_ms: None,
        tags: vec![],
        args: Bytes::from(vec![7; 33]),
    };
    let (wire, f) = round_trip(&Frame::new(45, Message::OwnerLoad(call.clone())));
    let Message::OwnerLoad(decoded) = f.message else {
        unreachable!()
    };
    let offset = decoded.args.as_ptr() as usize - wire.as_ptr() as usize;
    assert_eq!(offset % 16, 0, "arguments not at an aligned frame offset");

    let long_name = OwnerLoad {
        loader: "l".repeat(256).into(),
        ..call
    };
    assert!(matches!(
        Frame::new(0, Message::OwnerLoad(long_name)).to_bytes(&limits()),
        Err(ProtocolError::LengthOverLimit {
            field: Field::LoaderName,
            ..
        })
    ));

    for reply in [
        OwnerLoadReply::Loaded(Entry::new(Bytes::from_static(b"v"))),
        OwnerLoadReply::WrongOwner { epoch: 1 },
        OwnerLoadReply::UnknownLoader,
        OwnerLoadReply::Failed {
            message: "db timeout".into(),
        },
        OwnerLoadReply::Rejected {
            message: "not a user id".into(),
        },
        OwnerLoadReply::ArgumentsTooLarge { limit: 65_536 },
    ] {
        round_trip(&Frame::new(45, Message::OwnerLoadReply(reply)));
    }
    assert_malformed(message(Kind::OwnerLoadReply, &[6]), Field::Status);
}

#[test]
fn raft_and_gossip_are_opaque_and_shared() {
    let body = Bytes::from((0..=255u8).collect::<Vec<_>>());
    for m in [Message::Raft(body.clone()), Message::Gossip(body.clone())] {
        let (wire, f) = round_trip(&Frame::new(0, m));
        let (Message::Raft(b) | Message::Gossip(b)) = f.message else {
            unreachable!()
        };
        assert_eq!(b, body);
        assert_eq!(b.as_ptr(), wire[HEADER_LEN..].as_ptr());
    }
    round_trip(&Frame::new(0, Message::Gossip(Bytes::new())));
}

#[test]
fn metadata_snapshot() {
    let members: Vec<Member> = [
        "10.0.0.2:7400",
        "[fe80::1%3]:7400",
        "[2001:db8::7]:65535",
        "0.0.0.0:0",
    ]
    .iter()
    .enumerate()
    .map(|(i, a)| Member {
        node: NodeIdentity::new(format!("node-{i}"), i as u64),
        role: if i % 2 == 0 {
            Role::Member
        } else {
            Role::Client
        },
        address: a.parse().unwrap(),
    })
    .collect();
    round_trip(&Frame::new(
        0,
        Message::MetadataSnapshot(MetadataSnapshot { epoch: 12, members }),
    ));

    // epoch, one member: generation, id "n", role 0, family 5
    let mut payload = 12u64.to_le_bytes().to_vec();
    payload.extend_from_slice(&[1, 0]);
    payload.extend_from_slice(&1u64.to_le_bytes());
    payload.extend_from_slice(&[1, 0, b'n', 0, 5, 0, 0, 0, 0, 0, 0]);
    assert_malformed(message(Kind::MetadataSnapshot, &payload), Field::Address);
    // A count of 1024 members with no bytes for them.
    let mut payload = 12u64.to_le_bytes().to_vec();
    payload.extend_from_slice(&1024u16.to_le_bytes());
    assert_malformed(message(Kind::MetadataSnapshot, &payload), Field::Members);
    let mut payload = 12u64.to_le_bytes().to_vec();
    payload.extend_from_slice(&1025u16.to_le_bytes());
    assert_over_limit(message(Kind::MetadataSnapshot, &payload), Field::Members);
}

#[test]
fn unknown_kind_from_a_newer_peer_closes_only_its_stream() {
    let wire = raw_frame(0x7f, 0, 77, b"payload of the future");
    let err = Frame::decode_exact(wire, &limits()).unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::UnknownKind {
            kind: 0x7f,
            request_id: 77
        }
    ));
    assert_eq!(err.recovery(), Recovery::CloseStream);
    assert_eq!(err.code(), ErrorCode::UNKNOWN_KIND);
}

#[test]
fn handshake_frames_negotiate() {
    let ours = Hello {
        versions: VersionRange::SUPPORTED,
        ..Hello::new("orders", ("api-1", 5), Role::Member)
    };
    let (_, f) = round_trip(&Frame::new(0, Message::Hello(ours.clone())));
    let Message::Hello(theirs) = f.message else {
        unreachable!()
    };
    let agreed = hydracache_protocol::negotiate(&ours, &theirs).unwrap();
    assert_eq!(agreed.version, hydracache_protocol::MAX_VERSION);
    assert_eq!(agreed.peer, NodeIdentity::new("api-1", 5));
}
