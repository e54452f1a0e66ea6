//! The cluster runtime (feature `cluster`): one QUIC endpoint per node with
//! mutual TLS, carrying the protocol crate's frames.

mod gossip;
pub(crate) mod node;
mod ownership;
mod tls;
mod transport;

pub use gossip::{keys as gossip_keys, GossipInbox, QuicGossip};
pub use node::{ClusterDiagnostics, ClusterError, InvalidationMode, NodeBuilder};
pub use ownership::{rendezvous_weight, KeyMove, MembershipView};
pub use tls::{DevCa, NodeCertPem, TlsConfig, TlsError, ALPN, SERVER_NAME};
pub use transport::{Handler, PeerIdentity, Reply, Transport, TransportError};
