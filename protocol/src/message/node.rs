//! Node identity: who sent a message, and which incarnation of it.

use crate::error::{Field, ProtocolError};
use crate::text::Text;
use crate::wire::{Reader, Writer};

/// A node's identity: its configured id and the generation of the running
/// process. A restarted process gets a new, larger generation, so messages
/// from its previous life can be told apart and refused.
///
/// Wire layout: `u64` generation, then the id as a `u16`-length UTF-8 string
/// of at most [`Limits::max_name_len`](crate::Limits::max_name_len) bytes.
///
/// ```
/// use hydracache_protocol::NodeIdentity;
///
/// let node = NodeIdentity::new("api-1", 3);
/// assert_eq!(node.id, "api-1");
/// assert_eq!(node.generation, 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct NodeIdentity {
    /// The node id, as configured (`Grid::member().node_id("api-1")`).
    pub id: Text,
    /// The generation of this process.
    pub generation: u64,
}

impl NodeIdentity {
    /// A node identity.
    pub fn new(id: impl Into<Text>, generation: u64) -> Self {
        NodeIdentity {
            id: id.into(),
            generation,
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let generation = r.u64(Field::Generation)?;
        let limit = r.limits.max_name_len;
        let id = r.text16(Field::NodeId, limit)?;
        Ok(NodeIdentity { id, generation })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        w.u64(self.generation);
        let limit = w.limits.max_name_len;
        w.bytes16(Field::NodeId, self.id.as_bytes(), limit)
    }
}
