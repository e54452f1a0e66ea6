//! MetadataSnapshot: the membership Raft has admitted.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::error::{Field, ProtocolError};
use crate::wire::{Reader, Writer};

use super::{NodeIdentity, Role};

/// Smallest encoded member: generation (8), empty id (2), role (1), IPv4
/// address (1 + 4 + 2).
const MIN_MEMBER_LEN: usize = 18;

/// One node in a [`MetadataSnapshot`].
///
/// Wire layout: node identity, `u8` role, address: `u8` family (4 or 6),
/// then for 4: 4 address bytes and `u16` port; for 6: 16 address bytes,
/// `u16` port, `u32` flow info, `u32` scope id.
///
/// ```
/// use hydracache_protocol::{Member, NodeIdentity, Role};
///
/// let m = Member {
///     node: NodeIdentity::new("api-1", 5),
///     role: Role::Member,
///     address: "10.0.0.2:7400".parse().unwrap(),
/// };
/// assert_eq!(m.address.port(), 7400);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Member {
    /// Id and generation.
    pub node: NodeIdentity,
    /// Member or client.
    pub role: Role,
    /// Where the node's QUIC endpoint listens.
    pub address: SocketAddr,
}

impl Member {
    fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let node = NodeIdentity::read(r)?;
        let role = Role::read(r)?;
        let address = match r.u8(Field::Address)? {
            4 => {
                let ip = Ipv4Addr::from(r.ipv4()?);
                SocketAddr::V4(SocketAddrV4::new(ip, r.u16(Field::Address)?))
            }
            6 => {
                let ip = Ipv6Addr::from(r.ipv6()?);
                let port = r.u16(Field::Address)?;
                let flowinfo = r.u32(Field::Address)?;
                let scope_id = r.u32(Field::Address)?;
                SocketAddr::V6(SocketAddrV6::new(ip, port, flowinfo, scope_id))
            }
            _ => {
                return Err(ProtocolError::Malformed {
                    field: Field::Address,
                    reason: "address family must be 4 or 6",
                })
            }
        };
        Ok(Member {
            node,
            role,
            address,
        })
    }

    fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        self.node.write(w)?;
        w.u8(self.role.byte());
        match self.address {
            SocketAddr::V4(a) => {
                w.u8(4);
                w.raw(&a.ip().octets());
                w.u16(a.port());
            }
            SocketAddr::V6(a) => {
                w.u8(6);
                w.raw(&a.ip().octets());
                w.u16(a.port());
                w.u32(a.flowinfo());
                w.u32(a.scope_id());
            }
        }
        Ok(())
    }
}

/// The membership at an epoch, as Raft committed it. Sent to clients and to
/// members catching up, so everyone computes the same owners.
///
/// Wire layout: `u64` epoch, `u16` member count (at most
/// [`Limits::max_batch_len`](crate::Limits::max_batch_len)), members.
///
/// ```
/// use hydracache_protocol::MetadataSnapshot;
///
/// let empty = MetadataSnapshot { epoch: 1, members: vec![] };
/// assert!(empty.members.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct MetadataSnapshot {
    /// The membership epoch.
    pub epoch: u64,
    /// Every node admitted at that epoch.
    pub members: Vec<Member>,
}

impl MetadataSnapshot {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let epoch = r.u64(Field::Epoch)?;
        let limit = r.limits.max_batch_len;
        let n = r.count(Field::Members, limit, MIN_MEMBER_LEN)?;
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            members.push(Member::read(r)?);
        }
        Ok(MetadataSnapshot { epoch, members })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        w.u64(self.epoch);
        let limit = w.limits.max_batch_len;
        w.count(Field::Members, self.members.len(), limit)?;
        for m in &self.members {
            m.write(w)?;
        }
        Ok(())
    }
}
