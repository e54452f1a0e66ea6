//! The cluster runtime (feature `cluster`): one QUIC endpoint per node with
//! mutual TLS, carrying the protocol crate's frames.

mod builder;
mod consensus;
mod gossip;
mod handle;
mod handler;
mod invalidations;
// The owner's lease table: its rules are complete and unit-tested; the
// owner's Load/Fill handlers that drive it are the next step of the read path.
#[cfg_attr(not(test), allow(dead_code))]
mod lease;
mod node;
mod ownership;
mod raft;
mod raft_state;
mod read_path;
mod routing;
mod sequence;
mod telemetry;
mod tls;
mod transport;

pub use builder::{ClusterError, InvalidationMode, NodeBuilder};
pub use gossip::{keys as gossip_keys, GossipInbox, QuicGossip};
pub use handle::{ClusterDiagnostics, PeerDiagnostics};
pub use ownership::{rendezvous_weight, KeyMove, MembershipView};
pub use raft::{
    decode_message, encode_message, raft_id, Applied, CommandError, DecodeError, Ignored,
    MembershipCommand, Outbound, Outcome, ProposeError, RaftConfig, RaftDriver, RaftError,
    RaftOutput, StepError, DEFAULT_MAX_RAFT_MESSAGE_BYTES, MAX_COMMAND_LEN, MAX_NODE_ID_LEN,
    MAX_RAFT_MESSAGE_FIELDS,
};
pub use read_path::OwnerUnreachable;
pub use tls::{DevCa, NodeCertPem, TlsConfig, TlsError, ALPN, SERVER_NAME};
pub use transport::{Handler, PeerIdentity, Reply, Transport, TransportError};
