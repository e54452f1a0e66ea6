//! The cluster runtime (feature `cluster`): one QUIC endpoint per node with
//! mutual TLS, carrying the protocol crate's frames.

mod attachment;
mod authority;
mod builder;
mod consensus;
mod copy_gate;
mod dial;
mod gossip;
mod handle;
mod handler;
mod handshake;
mod high_water;
mod in_flight;
mod invalidations;
mod isolation;
mod lease;
mod load_path;
mod mux;
mod near_copies;
mod node;
mod owner_load;
mod ownership;
#[cfg(feature = "test-hooks")]
mod pause;
mod raft;
mod raft_state;
mod read_path;
mod rejoin;
mod routing;
mod sequence;
mod settling;
mod telemetry;
mod tls;
mod transport;
mod voters;

pub use builder::{ClusterError, InvalidationMode, NodeBuilder};
pub use gossip::{
    keys as gossip_keys, GossipInbox, QuicGossip, MAX_GOSSIP_DECOMPRESSED, MAX_GOSSIP_PAYLOAD,
};
pub use handle::{ClusterDiagnostics, PeerDiagnostics};
pub use ownership::{rendezvous_weight, KeyMove, MembershipView};
pub use raft::{
    decode_message, encode_message, incarnation, raft_id, Applied, CommandError, DecodeError,
    Ignored, MembershipCommand, Outbound, Outcome, ProposeError, RaftConfig, RaftDriver, RaftError,
    RaftOutput, StepError, DEFAULT_MAX_RAFT_MESSAGE_BYTES, MAX_COMMAND_LEN, MAX_NODE_ID_LEN,
    MAX_RAFT_MESSAGE_FIELDS,
};
pub use read_path::OwnerUnreachable;
pub use tls::{
    DevCa, NodeCertPem, TlsConfig, TlsError, ALPN, CLIENT_ROLE_URI, MEMBER_ROLE_URI, SERVER_NAME,
};
pub use transport::{
    Handler, PeerIdentity, Reply, Transport, TransportError, TransportSizes, MAX_CONNECTIONS,
    MAX_HELLO_FRAME, MAX_MUX_FRAME, MAX_MUX_IN_FLIGHT, MAX_MUX_STREAMS, MAX_NODE_STREAMS,
    MAX_ONE_WAY_FRAME, MAX_ONE_WAY_STREAMS, MAX_REQUEST_STREAMS,
};
