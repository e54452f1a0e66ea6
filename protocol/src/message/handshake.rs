//! Hello/HelloAck and the rules that turn two of them into an agreement.

use std::fmt;

use crate::error::{Field, ProtocolError};
use crate::frame::{MAX_VERSION, MIN_VERSION};
use crate::text::Text;
use crate::wire::{Reader, Writer};

use super::NodeIdentity;

/// What a node is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Role {
    /// Owns a share of the keys, serves peers, runs loaders. Wire value 0.
    Member,
    /// A near cache that owns nothing and sees every invalidation. Wire value 1.
    Client,
}

impl Role {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Role, ProtocolError> {
        match r.u8(Field::Role)? {
            0 => Ok(Role::Member),
            1 => Ok(Role::Client),
            _ => Err(ProtocolError::Malformed {
                field: Field::Role,
                reason: "unknown role",
            }),
        }
    }

    pub(crate) fn byte(self) -> u8 {
        match self {
            Role::Member => 0,
            Role::Client => 1,
        }
    }
}

/// An inclusive range of protocol versions.
///
/// ```
/// use hydracache_protocol::VersionRange;
///
/// let ours = VersionRange::SUPPORTED;
/// assert!(ours.contains(1));
/// assert_eq!(VersionRange::new(1, 3).unwrap().to_string(), "1..=3");
/// assert!(VersionRange::new(3, 1).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionRange {
    min: u8,
    max: u8,
}

impl VersionRange {
    /// The versions this build speaks.
    pub const SUPPORTED: VersionRange = VersionRange {
        min: MIN_VERSION,
        max: MAX_VERSION,
    };

    /// The range `min..=max`; `None` unless `1 <= min <= max` (version 0 is
    /// never used, so a zeroed buffer cannot pass for a handshake).
    pub const fn new(min: u8, max: u8) -> Option<VersionRange> {
        if min == 0 || min > max {
            None
        } else {
            Some(VersionRange { min, max })
        }
    }

    /// Lowest version in the range.
    pub const fn min(self) -> u8 {
        self.min
    }

    /// Highest version in the range.
    pub const fn max(self) -> u8 {
        self.max
    }

    /// Whether `version` is in the range.
    pub const fn contains(self, version: u8) -> bool {
        self.min <= version && version <= self.max
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for VersionRange {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let a = u8::arbitrary(u)?.max(1);
        let b = u8::arbitrary(u)?.max(1);
        Ok(VersionRange {
            min: a.min(b),
            max: a.max(b),
        })
    }
}

/// Optional capabilities a node advertises in its Hello. Both sides use only
/// the features both advertised ([`Features::intersection`]); bits this build
/// does not know are carried unchanged and simply never match.
///
/// ```
/// use hydracache_protocol::Features;
///
/// let ours = Features::LEASES | Features::OWNER_LOAD;
/// let theirs = Features::LEASES | Features::DATAGRAMS;
/// assert_eq!(ours.intersection(theirs), Features::LEASES);
/// assert!(ours.contains(Features::OWNER_LOAD));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Features(pub u64);

impl Features {
    /// No optional features.
    pub const NONE: Features = Features(0);
    /// Serves Load/Fill: lease-based single flight across the cluster. Bit 0.
    pub const LEASES: Features = Features(1 << 0);
    /// Runs named loaders on behalf of peers (OwnerLoad). Bit 1.
    pub const OWNER_LOAD: Features = Features(1 << 1);
    /// Accepts Invalidate, InvalidateAck, Ping and Pong frames in unreliable
    /// datagrams as well as on streams. Bit 2.
    pub const DATAGRAMS: Features = Features(1 << 2);
    /// Every feature this build knows.
    pub const KNOWN: Features = Features(0b111);

    /// Whether all of `other`'s bits are set.
    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    /// The features both sides have.
    pub const fn intersection(self, other: Features) -> Features {
        Features(self.0 & other.0)
    }
}

impl std::ops::BitOr for Features {
    type Output = Features;
    fn bitor(self, rhs: Features) -> Features {
        Features(self.0 | rhs.0)
    }
}

/// The handshake message, sent as [`Message::Hello`](crate::Message::Hello)
/// by the side that opens a connection and as
/// [`Message::HelloAck`](crate::Message::HelloAck) by the side that accepts it.
///
/// Its layout is frozen across protocol versions (new information goes into
/// new message kinds, gated by features), and it is always sent in a version 1
/// frame, so any two builds can read each other's handshake.
///
/// Wire layout: `u8` min version, `u8` max version, `u8` role, `u64`
/// features, cluster name (`u16` length + UTF-8), node identity.
///
/// ```
/// use hydracache_protocol::{negotiate, Features, Hello, Role};
///
/// let a = Hello::new("orders", ("api-1", 5), Role::Member);
/// let b = Hello::new("orders", ("api-2", 9), Role::Client);
/// let agreed = negotiate(&a, &b).unwrap();
/// assert_eq!(agreed.version, 1);
/// assert_eq!(agreed.peer.id, "api-2");
/// assert_eq!(agreed.features, Features::KNOWN);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Hello {
    /// The cluster the sender belongs to; peers of another cluster are refused.
    pub cluster: Text,
    /// Who the sender is.
    pub node: NodeIdentity,
    /// Member or client.
    pub role: Role,
    /// The protocol versions the sender speaks.
    pub versions: VersionRange,
    /// The optional features the sender offers.
    pub features: Features,
}

impl Hello {
    /// A Hello advertising every version and feature this build supports.
    /// `node` is anything that converts into a [`NodeIdentity`], such as an
    /// `(id, generation)` pair.
    pub fn new(cluster: impl Into<Text>, node: impl Into<NodeIdentity>, role: Role) -> Hello {
        Hello {
            cluster: cluster.into(),
            node: node.into(),
            role,
            versions: VersionRange::SUPPORTED,
            features: Features::KNOWN,
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Hello, ProtocolError> {
        let min = r.u8(Field::VersionRange)?;
        let max = r.u8(Field::VersionRange)?;
        let versions = VersionRange::new(min, max).ok_or(ProtocolError::Malformed {
            field: Field::VersionRange,
            reason: "needs 1 <= min <= max",
        })?;
        let role = Role::read(r)?;
        let features = Features(r.u64(Field::Features)?);
        let limit = r.limits.max_name_len;
        let cluster = r.text16(Field::ClusterName, limit)?;
        let node = NodeIdentity::read(r)?;
        Ok(Hello {
            cluster,
            node,
            role,
            versions,
            features,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        w.u8(self.versions.min);
        w.u8(self.versions.max);
        w.u8(self.role.byte());
        w.u64(self.features.0);
        let limit = w.limits.max_name_len;
        w.bytes16(Field::ClusterName, self.cluster.as_bytes(), limit)?;
        self.node.write(w)
    }
}

impl<T: Into<Text>> From<(T, u64)> for NodeIdentity {
    fn from((id, generation): (T, u64)) -> Self {
        NodeIdentity::new(id, generation)
    }
}

/// What two nodes agreed in their handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    /// The protocol version both sides use from now on: the highest both speak.
    pub version: u8,
    /// The features both sides offered.
    pub features: Features,
    /// The peer's identity.
    pub peer: NodeIdentity,
    /// The peer's role.
    pub peer_role: Role,
}

/// Applies the handshake rules to this node's Hello and the peer's.
///
/// Both sides call it with the two messages swapped and reach the same
/// version and features, so HelloAck needs no extra "chosen version" field.
/// The rules:
///
/// 1. the cluster names must be equal, byte for byte;
/// 2. at least one side must be a member (clients talk only to members);
/// 3. the version ranges must overlap; the highest common version is used;
/// 4. the features are the intersection of both bitmasks.
///
/// Refusals are [`ProtocolError`]s whose [`code`](ProtocolError::code) goes
/// back to the peer in a GoAway before closing the connection.
///
/// ```
/// use hydracache_protocol::{negotiate, Hello, ProtocolError, Role};
///
/// let ours = Hello::new("orders", ("api-1", 1), Role::Member);
/// let stranger = Hello::new("billing", ("b-1", 1), Role::Member);
/// assert!(matches!(
///     negotiate(&ours, &stranger),
///     Err(ProtocolError::ClusterMismatch { .. })
/// ));
/// ```
pub fn negotiate(local: &Hello, remote: &Hello) -> Result<Agreement, ProtocolError> {
    if local.cluster != remote.cluster {
        return Err(ProtocolError::ClusterMismatch {
            local: local.cluster.to_string(),
            remote: remote.cluster.to_string(),
        });
    }
    if local.role == Role::Client && remote.role == Role::Client {
        return Err(ProtocolError::ClientToClient);
    }
    let version = local.versions.max.min(remote.versions.max);
    if version < local.versions.min.max(remote.versions.min) {
        return Err(ProtocolError::NoCommonVersion {
            local: local.versions,
            remote: remote.versions,
        });
    }
    Ok(Agreement {
        version,
        features: local.features.intersection(remote.features),
        peer: remote.node.clone(),
        peer_role: remote.role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(cluster: &str, role: Role, min: u8, max: u8, features: u64) -> Hello {
        Hello {
            cluster: cluster.into(),
            node: NodeIdentity::new("n", 1),
            role,
            versions: VersionRange::new(min, max).unwrap(),
            features: Features(features),
        }
    }

    #[test]
    fn picks_the_highest_common_version_on_both_sides() {
        let a = hello("c", Role::Member, 1, 3, 0b011);
        let b = hello("c", Role::Member, 2, 5, 0b110);
        let ab = negotiate(&a, &b).unwrap();
        let ba = negotiate(&b, &a).unwrap();
        assert_eq!(ab.version, 3);
        assert_eq!(ba.version, 3);
        assert_eq!(ab.features, Features(0b010));
        assert_eq!(ab.features, ba.features);
    }

    #[test]
    fn refuses_disjoint_versions() {
        let a = hello("c", Role::Member, 1, 1, 0);
        let b = hello("c", Role::Member, 2, 2, 0);
        let err = negotiate(&a, &b).unwrap_err();
        assert!(matches!(err, ProtocolError::NoCommonVersion { .. }));
        assert_eq!(err.code(), crate::ErrorCode::UNSUPPORTED_VERSION);
    }

    #[test]
    fn refuses_two_clients_but_not_a_client_and_a_member() {
        let c = hello("c", Role::Client, 1, 1, 0);
        let m = hello("c", Role::Member, 1, 1, 0);
        assert!(matches!(
            negotiate(&c, &c),
            Err(ProtocolError::ClientToClient)
        ));
        assert_eq!(negotiate(&c, &m).unwrap().peer_role, Role::Member);
        assert_eq!(negotiate(&m, &c).unwrap().peer_role, Role::Client);
    }

    #[test]
    fn keeps_unknown_feature_bits_out_of_the_agreement() {
        let newer = hello("c", Role::Member, 1, 1, Features::KNOWN.0 | 1 << 40);
        let ours = hello("c", Role::Member, 1, 1, Features::KNOWN.0);
        assert_eq!(negotiate(&ours, &newer).unwrap().features, Features::KNOWN);
    }

    #[test]
    fn version_zero_is_never_valid() {
        assert!(VersionRange::new(0, 1).is_none());
        assert!(VersionRange::new(1, 1).is_some());
    }
}
