//! The one error type of the crate, and what a caller should do about each error.

use std::fmt;

use crate::message::{ErrorCode, VersionRange};

/// Everything that can go wrong while encoding, decoding or negotiating.
///
/// Decoding never panics: every malformed input maps to one of these
/// variants. [`ProtocolError::recovery`] says whether the caller should close
/// only the stream the bytes came from or the whole connection, and
/// [`ProtocolError::code`] gives the [`ErrorCode`] to put in an
/// [`Error`](crate::Message::Error) or [`GoAway`](crate::Message::GoAway)
/// frame sent back to the peer.
///
/// ```
/// use bytes::Bytes;
/// use hydracache_protocol::{Frame, Limits, ProtocolError, Recovery};
///
/// let mut garbage = Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n\0\0\0\0\0\0");
/// let err = Frame::decode(&mut garbage, &Limits::default()).unwrap_err();
/// assert!(matches!(err, ProtocolError::BadMagic { .. }));
/// assert_eq!(err.recovery(), Recovery::CloseConnection);
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The buffer ends before the frame does. A stream decoder waits for more
    /// bytes instead of returning this, except at end of stream.
    #[error("truncated frame: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the complete frame (or header) needs.
        needed: usize,
        /// Bytes that were available.
        available: usize,
    },
    /// The frame does not start with the magic bytes `HYDC`: the peer is not
    /// speaking this protocol or the stream lost its framing.
    #[error("bad magic {found:02x?}: not a HydraCache frame (expected \"HYDC\")")]
    BadMagic {
        /// The first bytes found where the magic should be (fewer than four if
        /// the input was shorter).
        found: [u8; 4],
    },
    /// The frame's protocol version is outside the range this build speaks.
    /// Peers must agree on a version through Hello/HelloAck first.
    #[error("unsupported protocol version {version} (this build speaks {supported})")]
    UnsupportedVersion {
        /// The version byte of the frame.
        version: u8,
        /// The versions this build can decode.
        supported: VersionRange,
    },
    /// A well-formed frame (checksum verified) of a message kind this build
    /// does not know, probably from a newer peer. The frame has been consumed,
    /// so the stream is still in sync; close just that stream or answer with
    /// an [`Error`](crate::Message::Error) frame.
    #[error("unknown message kind {kind:#04x} (request id {request_id}); the peer may be newer")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
        /// The request id of the frame, to answer it.
        request_id: u64,
    },
    /// The CRC-32 of header and payload does not match the trailer: corruption
    /// or a framing bug on one side.
    #[error("checksum mismatch: frame says {expected:#010x}, bytes give {actual:#010x}")]
    ChecksumMismatch {
        /// The checksum carried in the frame trailer.
        expected: u32,
        /// The checksum computed over the received bytes.
        actual: u32,
    },
    /// A length is above the configured [`Limits`](crate::Limits) or the hard
    /// ceiling of its wire field. Checked before any allocation.
    #[error("{field} length {len} is over the limit of {limit}")]
    LengthOverLimit {
        /// Which field.
        field: Field,
        /// The length found (or asked to encode).
        len: u64,
        /// The limit in force.
        limit: u64,
    },
    /// A field has a value that cannot be right: an unknown discriminant,
    /// invalid UTF-8, non-zero padding, or a length running past the payload.
    #[error("malformed {field}: {reason}")]
    Malformed {
        /// Which field.
        field: Field,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Bytes remain after the last field of a message.
    #[error("{count} trailing bytes after the {kind} payload")]
    TrailingBytes {
        /// The message kind whose payload was longer than its fields.
        kind: crate::Kind,
        /// How many bytes were left over.
        count: usize,
    },
    /// The peer's Hello names another cluster.
    #[error("peer belongs to cluster {remote:?}, this node to {local:?}")]
    ClusterMismatch {
        /// This node's cluster name.
        local: String,
        /// The cluster name the peer sent.
        remote: String,
    },
    /// The two sides' protocol version ranges do not overlap.
    #[error("no common protocol version: this node speaks {local}, the peer {remote}")]
    NoCommonVersion {
        /// This node's range.
        local: VersionRange,
        /// The peer's range.
        remote: VersionRange,
    },
    /// Two clients tried to talk to each other; clients only talk to members.
    #[error("both sides are clients; a client must connect to a member")]
    ClientToClient,
    /// The transport under a [`FrameCodec`](crate::FrameCodec) failed. Never
    /// produced by the sans-IO functions.
    #[error("transport error: {0}")]
    Io(#[from] std::io::Error),
}

/// What the receiver of a [`ProtocolError`] should close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recovery {
    /// Only the stream the bytes came from: the peer may be fine (newer, or
    /// configured with larger limits), and other streams are unaffected.
    CloseStream,
    /// The whole connection: the peer sent bytes that a correct peer of a
    /// compatible version never sends, or the handshake failed.
    CloseConnection,
}

impl ProtocolError {
    /// What to close after this error.
    ///
    /// Truncation, unknown kinds, oversized lengths and I/O errors close the
    /// stream; everything that means the peer is broken, hostile or
    /// incompatible closes the connection.
    pub fn recovery(&self) -> Recovery {
        match self {
            ProtocolError::Truncated { .. }
            | ProtocolError::UnknownKind { .. }
            | ProtocolError::LengthOverLimit { .. }
            | ProtocolError::Io(_) => Recovery::CloseStream,
            ProtocolError::BadMagic { .. }
            | ProtocolError::UnsupportedVersion { .. }
            | ProtocolError::ChecksumMismatch { .. }
            | ProtocolError::Malformed { .. }
            | ProtocolError::TrailingBytes { .. }
            | ProtocolError::ClusterMismatch { .. }
            | ProtocolError::NoCommonVersion { .. }
            | ProtocolError::ClientToClient => Recovery::CloseConnection,
        }
    }

    /// The [`ErrorCode`] that tells the peer about this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::UnsupportedVersion { .. } | ProtocolError::NoCommonVersion { .. } => {
                ErrorCode::UNSUPPORTED_VERSION
            }
            ProtocolError::UnknownKind { .. } => ErrorCode::UNKNOWN_KIND,
            ProtocolError::LengthOverLimit { .. } => ErrorCode::LIMIT_EXCEEDED,
            ProtocolError::ClusterMismatch { .. } => ErrorCode::CLUSTER_MISMATCH,
            ProtocolError::ClientToClient => ErrorCode::REFUSED,
            ProtocolError::Io(_) => ErrorCode::INTERNAL,
            ProtocolError::Truncated { .. }
            | ProtocolError::BadMagic { .. }
            | ProtocolError::ChecksumMismatch { .. }
            | ProtocolError::Malformed { .. }
            | ProtocolError::TrailingBytes { .. } => ErrorCode::PROTOCOL,
        }
    }
}

/// Names the field an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// The whole frame (header + payload + checksum).
    Frame,
    /// The header's flags.
    Flags,
    /// A cache key.
    Key,
    /// The number of keys in a batch.
    Keys,
    /// One tag.
    Tag,
    /// The number of tags in a message.
    Tags,
    /// The cluster name of a Hello.
    ClusterName,
    /// A node id.
    NodeId,
    /// The role of a node.
    Role,
    /// A protocol version range.
    VersionRange,
    /// The target kind of an Invalidate.
    Target,
    /// The status byte of a reply.
    Status,
    /// A TTL.
    Ttl,
    /// A value blob.
    Value,
    /// The zero bytes that align a value.
    Padding,
    /// The name of a loader.
    LoaderName,
    /// The arguments of an OwnerLoad.
    Arguments,
    /// A human-readable message (Error, GoAway, failed loads).
    Message,
    /// The number of members in a snapshot.
    Members,
    /// A socket address.
    Address,
    /// A ping nonce.
    Nonce,
    /// An error code.
    Code,
    /// A node generation.
    Generation,
    /// An invalidation sequence number.
    Sequence,
    /// A membership epoch.
    Epoch,
    /// A lease token.
    Token,
    /// A feature bitmask.
    Features,
    /// A retry delay.
    RetryAfter,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Frame => "frame",
            Field::Flags => "flags",
            Field::Key => "key",
            Field::Keys => "key count",
            Field::Tag => "tag",
            Field::Tags => "tag count",
            Field::ClusterName => "cluster name",
            Field::NodeId => "node id",
            Field::Role => "role",
            Field::VersionRange => "version range",
            Field::Target => "invalidation target",
            Field::Status => "reply status",
            Field::Ttl => "ttl",
            Field::Value => "value",
            Field::Padding => "alignment padding",
            Field::LoaderName => "loader name",
            Field::Arguments => "loader arguments",
            Field::Message => "message text",
            Field::Members => "member count",
            Field::Address => "address",
            Field::Nonce => "nonce",
            Field::Code => "error code",
            Field::Generation => "generation",
            Field::Sequence => "sequence number",
            Field::Epoch => "epoch",
            Field::Token => "lease token",
            Field::Features => "features",
            Field::RetryAfter => "retry delay",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kind_closes_only_the_stream() {
        let err = ProtocolError::UnknownKind {
            kind: 0x7f,
            request_id: 9,
        };
        assert_eq!(err.recovery(), Recovery::CloseStream);
        assert_eq!(err.code(), ErrorCode::UNKNOWN_KIND);
        assert!(err.to_string().contains("0x7f"));
    }

    #[test]
    fn corruption_closes_the_connection() {
        let err = ProtocolError::ChecksumMismatch {
            expected: 1,
            actual: 2,
        };
        assert_eq!(err.recovery(), Recovery::CloseConnection);
        assert_eq!(err.code(), ErrorCode::PROTOCOL);
    }

    #[test]
    fn messages_name_the_field() {
        let err = ProtocolError::Malformed {
            field: Field::Role,
            reason: "unknown role",
        };
        assert_eq!(err.to_string(), "malformed role: unknown role");
        let err = ProtocolError::LengthOverLimit {
            field: Field::Key,
            len: 5000,
            limit: 4096,
        };
        assert_eq!(err.to_string(), "key length 5000 is over the limit of 4096");
    }
}
