//! The store's error type.

/// Why the store refused an operation. A refused write stores nothing and
/// leaves the previous value (if any) in place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Keys must have at least one byte.
    #[error("empty key: keys must have at least one byte")]
    EmptyKey,
    /// The key is longer than the configured maximum.
    #[error("key is {len} bytes, over the limit of {max} (StoreConfig::max_key_len)")]
    KeyTooLong {
        /// Length of the rejected key.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// The entry (key + value + tags + overhead) is larger than the maximum
    /// entry size, which is never more than the capacity.
    #[error("entry needs {size} bytes, over the max entry size of {max} bytes (StoreConfig::max_entry_bytes)")]
    EntryTooLarge {
        /// Bytes the entry would be charged.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// More tags than the configured maximum per entry.
    #[error("{count} tags on one entry, over the limit of {max} (StoreConfig::max_tags)")]
    TooManyTags {
        /// Number of tags given.
        count: usize,
        /// Configured limit.
        max: usize,
    },
    /// A tag is empty or longer than the configured maximum.
    #[error("tag of {len} bytes is outside 1..={max} (StoreConfig::max_tag_len)")]
    BadTag {
        /// Length of the rejected tag.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// The value could not be archived.
    #[error("value could not be encoded: {0}")]
    Encode(String),
    /// Stored or received bytes are not a valid archive of the requested type
    /// (for example the type behind a key changed). Nothing was returned.
    #[error("bytes are not a valid archive of the requested type: {0}")]
    Decode(String),
}
