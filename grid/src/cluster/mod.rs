//! The cluster runtime (feature `cluster`): one QUIC endpoint per node with
//! mutual TLS, carrying the protocol crate's frames.

mod tls;
mod transport;

pub use tls::{DevCa, NodeCertPem, TlsConfig, TlsError, ALPN, SERVER_NAME};
pub use transport::{Handler, PeerIdentity, Reply, Transport, TransportError};
