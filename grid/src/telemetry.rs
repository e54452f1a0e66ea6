//! What the grid tells `tracing`: the targets its spans and events use, and
//! the two values they carry instead of a key or an error text.
//!
//! Keys never appear in a span or an event: a key is often personal data
//! (`user:42:email`), so the grid records [`key_hash`] instead, the same in
//! every process and build so that one key can be followed across the logs
//! of several nodes. It identifies, it does not hide: a key with little
//! entropy can be found again by hashing candidates. Errors are recorded by
//! kind ([`error_kind`]), because some error texts name their key.
//!
//! Every field is passed to the `tracing` macros as a value, never
//! pre-formatted, so with no subscriber listening (or one that filters the
//! target out) nothing is hashed, formatted or allocated.

use crate::error::CacheError;

/// Loads: one span per loader run, and the joins of loads in flight.
pub(crate) const LOAD: &str = "hydracache::load";
/// Requests to a peer (fetch, put) with their outcome and duration.
#[cfg(feature = "cluster")]
pub(crate) const PEER: &str = "hydracache::peer";
/// Invalidation fan-out (acknowledgements, late nodes) and flushes on a
/// gap in a peer's invalidation sequence.
#[cfg(feature = "cluster")]
pub(crate) const INVALIDATION: &str = "hydracache::invalidation";
/// Nodes admitted to and removed from the membership.
#[cfg(feature = "cluster")]
pub(crate) const MEMBERSHIP: &str = "hydracache::membership";
/// Raft leader changes and the Raft task's exit.
#[cfg(feature = "cluster")]
pub(crate) const RAFT: &str = "hydracache::raft";

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The 64-bit FNV-1a hash of `key`, finished with MurmurHash3's mixer: the
/// value spans and events carry in place of the key.
pub(crate) fn key_hash(key: &str) -> u64 {
    let mut h = FNV_OFFSET_BASIS;
    for &b in key.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A name for what went wrong, free of keys and values.
pub(crate) fn error_kind(e: &CacheError) -> &'static str {
    match e {
        CacheError::Load(_) => "loader_failed",
        CacheError::LoaderPanicked(_) => "loader_panicked",
        CacheError::Store(_) => "store",
        CacheError::Codec { .. } => "codec",
        CacheError::TypeMismatch { .. } => "type_mismatch",
        CacheError::Unacknowledged { .. } => "unacknowledged",
        CacheError::OwnerUnreachable { .. } => "owner_unreachable",
        CacheError::Cancelled => "cancelled",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_hash_is_the_same_in_every_build() {
        // Part of what operators rely on to follow a key across nodes.
        assert_eq!(key_hash(""), 0xefd0_1f60_ba99_2926);
        assert_eq!(key_hash("user:42"), key_hash("user:42"));
        assert_ne!(key_hash("user:42"), key_hash("user:43"));
    }

    #[test]
    fn error_kinds_do_not_carry_the_key() {
        let e = CacheError::OwnerUnreachable {
            key: "user:42".into(),
        };
        assert!(e.to_string().contains("user:42"));
        assert_eq!(error_kind(&e), "owner_unreachable");
    }
}
