//! chitchat gossip over the node's QUIC endpoint: no second socket.
//!
//! chitchat drives its protocol through its `Transport`/`Socket` traits.
//! Here a `send` becomes one `Gossip` frame on a QUIC unidirectional stream
//! (gossip messages can be far larger than a datagram), sent from a task of
//! its own so that a slow handshake with one peer never stalls the gossip
//! loop. Received `Gossip` frames are handed to a bounded inbox by the node's
//! frame handler; `recv` waits on that inbox, which makes it cancel-safe.

use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::Bytes;
use chitchat::transport::{Socket, Transport as ChitchatTransport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use hydracache_protocol::Message;
use tokio::sync::mpsc;

use super::transport::Transport;

/// Gossip messages buffered before new ones are dropped (gossip tolerates loss).
const INBOX_CAPACITY: usize = 1024;

/// Where the node's frame handler delivers received gossip.
#[derive(Clone)]
pub struct GossipInbox {
    tx: mpsc::Sender<(SocketAddr, ChitchatMessage)>,
}

impl GossipInbox {
    /// Hands a received `Gossip` payload to chitchat. Bytes that are not a
    /// chitchat message are dropped (the sender is authenticated, so this is
    /// a bug or a version skew, not an attack surface worth a reply).
    pub fn deliver(&self, from: SocketAddr, payload: &[u8]) -> bool {
        let mut buf = payload;
        match ChitchatMessage::deserialize(&mut buf) {
            Ok(msg) => self.tx.try_send((from, msg)).is_ok(),
            Err(_) => false,
        }
    }
}

/// chitchat's transport, over a [`Transport`].
pub struct QuicGossip {
    transport: Transport,
    inbox: Mutex<Option<mpsc::Receiver<(SocketAddr, ChitchatMessage)>>>,
}

impl QuicGossip {
    /// A gossip transport over `transport`, and the inbox its frame handler
    /// must feed with every `Gossip` frame.
    pub fn new(transport: Transport) -> (QuicGossip, GossipInbox) {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        (
            QuicGossip {
                transport,
                inbox: Mutex::new(Some(rx)),
            },
            GossipInbox { tx },
        )
    }
}

struct QuicSocket {
    transport: Transport,
    rx: mpsc::Receiver<(SocketAddr, ChitchatMessage)>,
}

#[async_trait::async_trait]
impl ChitchatTransport for QuicGossip {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let _ = listen_addr; // the QUIC endpoint is already bound there
        let rx = self
            .inbox
            .lock()
            .expect("inbox")
            .take()
            .ok_or_else(|| anyhow::anyhow!("the gossip transport is already open"))?;
        Ok(Box::new(QuicSocket {
            transport: self.transport.clone(),
            rx,
        }))
    }
}

#[async_trait::async_trait]
impl Socket for QuicSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        let payload = Bytes::from(msg.serialize_to_vec());
        let transport = self.transport.clone();
        // Never wait here: a peer that is slow to connect must not hold up
        // gossip with the others. Failures are failures to gossip, which the
        // failure detector accounts for.
        tokio::spawn(async move {
            let _ = transport.send(to, Message::Gossip(payload)).await;
        });
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        self.rx
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("the node's frame handler is gone"))
    }
}

/// Keys a node publishes in its gossip state.
pub mod keys {
    /// "member" or "client".
    pub const ROLE: &str = "role";
    /// The address peers reach the node's QUIC endpoint at.
    pub const ADDR: &str = "addr";
    /// The node's invalidation high-water mark: the last sequence number it
    /// originated.
    pub const INVALIDATION_HWM: &str = "inv_hwm";
    /// The node id of the raft leader, as this member last heard (members
    /// only): a hint clients show in their diagnostics.
    pub const RAFT_LEADER: &str = "raft_leader";
    /// "1" once the node has started a graceful leave.
    pub const LEAVING: &str = "leaving";
}
