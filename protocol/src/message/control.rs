//! Error codes carried by Error and GoAway frames.

use std::fmt;

/// Why a request failed or a connection is going away.
///
/// An open set: a code this build does not know is kept as-is (and shown as
/// its number), so a newer peer's codes survive decoding.
///
/// ```
/// use hydracache_protocol::ErrorCode;
///
/// assert_eq!(ErrorCode::UNKNOWN_KIND.to_string(), "unknown_kind");
/// assert_eq!(ErrorCode(999).to_string(), "999");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// No error: an orderly shutdown (in GoAway).
    pub const NONE: ErrorCode = ErrorCode(0);
    /// The peer sent a frame this node could not decode.
    pub const PROTOCOL: ErrorCode = ErrorCode(1);
    /// No protocol version in common, or a frame of a version not agreed.
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(2);
    /// A message kind this node does not know.
    pub const UNKNOWN_KIND: ErrorCode = ErrorCode(3);
    /// A length over this node's limits.
    pub const LIMIT_EXCEEDED: ErrorCode = ErrorCode(4);
    /// The peer belongs to another cluster.
    pub const CLUSTER_MISMATCH: ErrorCode = ErrorCode(5);
    /// The peer's generation is older than the one membership knows for its
    /// node id: it is a process that has been replaced.
    pub const STALE_GENERATION: ErrorCode = ErrorCode(6);
    /// This node refuses the request (for example a client talking to a
    /// client, or a member asked to serve a feature it did not advertise).
    pub const REFUSED: ErrorCode = ErrorCode(7);
    /// This node is overloaded; retry later or elsewhere.
    pub const OVERLOADED: ErrorCode = ErrorCode(8);
    /// The node is shutting down.
    pub const SHUTTING_DOWN: ErrorCode = ErrorCode(9);
    /// A bug or unexpected condition on this node.
    pub const INTERNAL: ErrorCode = ErrorCode(10);

    /// The code's name, or `None` for a code this build does not know.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "none",
            1 => "protocol",
            2 => "unsupported_version",
            3 => "unknown_kind",
            4 => "limit_exceeded",
            5 => "cluster_mismatch",
            6 => "stale_generation",
            7 => "refused",
            8 => "overloaded",
            9 => "shutting_down",
            10 => "internal",
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}
