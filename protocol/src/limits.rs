//! Configurable bounds on everything a peer can make us hold in memory.

/// Bounds that every encoded and decoded frame must respect.
///
/// Each length read off the wire is checked against its limit *and* against
/// the bytes actually present before anything is allocated, so a hostile
/// length costs nothing. The encoder applies the same limits, so a node never
/// sends a frame that a peer with the same limits would refuse.
///
/// Every limit is also capped by the width of its wire field (a key length is
/// a `u16`, so no limit can admit a key over 65,535 bytes).
///
/// ```
/// use hydracache_protocol::Limits;
///
/// let limits = Limits {
///     max_frame_len: 1 << 20,
///     ..Limits::default()
/// };
/// assert_eq!(limits.max_key_len, 4096);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole frame (header, payload and checksum) in bytes. This bounds
    /// value size and what a stream decoder buffers. Default 16 MiB.
    pub max_frame_len: u32,
    /// Longest key in bytes. Default 4,096.
    pub max_key_len: usize,
    /// Most tags on one entry or in one invalidation. Default 64.
    pub max_tags: usize,
    /// Longest tag in bytes. Default 256.
    pub max_tag_len: usize,
    /// Most items in a batch: keys in one invalidation, members in one
    /// metadata snapshot. Default 1,024.
    pub max_batch_len: usize,
    /// Longest cluster name, node id or loader name in bytes. Default 255.
    pub max_name_len: usize,
}

impl Limits {
    /// The default limits, usable in `const` contexts.
    pub const DEFAULT: Limits = Limits {
        max_frame_len: 16 << 20,
        max_key_len: 4096,
        max_tags: 64,
        max_tag_len: 256,
        max_batch_len: 1024,
        max_name_len: 255,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
