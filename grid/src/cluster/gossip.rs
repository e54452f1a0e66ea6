//! chitchat gossip over the node's QUIC endpoint: no second socket.
//!
//! chitchat drives its protocol through its `Transport`/`Socket` traits.
//! Here a `send` becomes one `Gossip` frame on a QUIC unidirectional stream
//! (gossip messages can be far larger than a datagram), sent from a task of
//! its own so that a slow handshake with one peer never stalls the gossip
//! loop. Received `Gossip` frames are handed to a bounded inbox by the node's
//! frame handler; `recv` waits on that inbox, which makes it cancel-safe.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use chitchat::transport::{Socket, Transport as ChitchatTransport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use hydracache_protocol::Message;
use tokio::sync::mpsc;

use super::transport::Transport;

/// Gossip messages buffered before new ones are dropped (gossip tolerates loss).
const INBOX_CAPACITY: usize = 1024;

/// Largest gossip payload taken: what chitchat itself sends (it sizes every
/// message to fit a UDP datagram's payload, 65,507 bytes).
pub const MAX_GOSSIP_PAYLOAD: usize = 65_507;

/// Most bytes a gossip payload may decompress to, counted before anything
/// is decompressed: chitchat inflates each compressed block into up to
/// 64 KiB with no total cap, so a 64 KiB payload of tiny zstd frames could
/// otherwise ask for hundreds of megabytes.
pub const MAX_GOSSIP_DECOMPRESSED: usize = 1 << 20;

/// Why a gossip payload was dropped before chitchat saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GossipRefused {
    /// Longer than [`MAX_GOSSIP_PAYLOAD`].
    TooLarge(usize),
    /// Its blocks could decompress to more than [`MAX_GOSSIP_DECOMPRESSED`].
    Inflates(usize),
    /// The framing ends early or names an unknown block type.
    Malformed,
}

/// Checks a gossip payload's size and, walking chitchat's wire format
/// (header, digest, then a stream of tagged blocks), the most it can
/// decompress to.
pub(crate) fn check_payload(payload: &[u8]) -> Result<(), GossipRefused> {
    if payload.len() > MAX_GOSSIP_PAYLOAD {
        return Err(GossipRefused::TooLarge(payload.len()));
    }
    let mut buf = payload;
    let mut take = |n: usize| -> Result<&[u8], GossipRefused> {
        let (head, rest) = buf.split_at_checked(n).ok_or(GossipRefused::Malformed)?;
        buf = rest;
        Ok(head)
    };
    let u16_at = |b: &[u8]| usize::from(u16::from_le_bytes([b[0], b[1]]));
    // Magic number and version (checked by chitchat), message type.
    take(3)?;
    let kind = take(1)?[0];
    match kind {
        // SynAck: a digest, then the delta's block stream.
        1 => {
            let nodes = u16_at(take(2)?);
            for _ in 0..nodes {
                let id_len = u16_at(take(2)?);
                take(id_len + 8)?; // node id, generation
                let ip = match take(1)?[0] {
                    4 => 4,
                    6 => 16,
                    _ => return Err(GossipRefused::Malformed),
                };
                take(ip + 2 + 24)?; // address, port, heartbeat and versions
            }
        }
        // Ack: the delta's block stream.
        2 => {}
        // Syn and BadCluster carry no compressed blocks.
        _ => return Ok(()),
    }
    let mut inflated = 0usize;
    loop {
        let block = take(1)?[0];
        if block == 0 {
            return Ok(());
        }
        let len = u16_at(take(2)?);
        take(len)?;
        inflated += match block {
            1 => usize::from(u16::MAX), // compressed: up to one full buffer
            2 => len,
            _ => return Err(GossipRefused::Malformed),
        };
        if inflated > MAX_GOSSIP_DECOMPRESSED {
            return Err(GossipRefused::Inflates(inflated));
        }
    }
}

/// Where the node's frame handler delivers received gossip.
#[derive(Clone)]
pub struct GossipInbox {
    tx: mpsc::Sender<(SocketAddr, ChitchatMessage)>,
}

impl GossipInbox {
    /// Hands a received `Gossip` payload to chitchat. Payloads over the
    /// limits ([`MAX_GOSSIP_PAYLOAD`], [`MAX_GOSSIP_DECOMPRESSED`]) and bytes
    /// that are not a chitchat message are dropped (gossip tolerates loss).
    pub fn deliver(&self, from: SocketAddr, payload: &[u8]) -> bool {
        if check_payload(payload).is_err() {
            return false;
        }
        let mut buf = payload;
        match ChitchatMessage::deserialize(&mut buf) {
            Ok(msg) => self.tx.try_send((from, msg)).is_ok(),
            Err(_) => false,
        }
    }
}

/// What this node's gossip has sent: chitchat messages and their payload
/// bytes, counted where chitchat hands them to the transport (the QUIC
/// frame, packet and TLS overhead around each comes on top); the sends a
/// peer refused at the handshake; and, on a client, where it may gossip
/// (see [`gossips_to`]).
#[derive(Debug, Default)]
pub(crate) struct GossipSent {
    pub(crate) messages: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) refused: AtomicU64,
    /// `None` on a member (it gossips with everyone); on a client, its
    /// seeds and the members gossip reports live.
    pub(crate) only_to: RwLock<Option<HashSet<SocketAddr>>>,
}

/// Whether gossip goes to `to` from a node that may gossip `only_to` those
/// addresses (`None`: anywhere). A client gossips only to its seeds and
/// the members it knows: the handshake refuses two clients (clients do not
/// talk to clients), and a client chitchat has just heard of, not yet
/// reported live with its role, would otherwise be tried and refused. A
/// member gossips with everyone, clients included, so every client still
/// hears and is heard by the cluster.
pub(crate) fn gossips_to(only_to: Option<&HashSet<SocketAddr>>, to: SocketAddr) -> bool {
    only_to.is_none_or(|allowed| allowed.contains(&to))
}

/// chitchat's transport, over a [`Transport`].
pub struct QuicGossip {
    transport: Transport,
    inbox: Mutex<Option<mpsc::Receiver<(SocketAddr, ChitchatMessage)>>>,
    sent: Arc<GossipSent>,
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
                sent: Arc::default(),
            },
            GossipInbox { tx },
        )
    }

    /// Where the messages this transport sends are counted.
    pub(crate) fn sent(&self) -> Arc<GossipSent> {
        Arc::clone(&self.sent)
    }
}

struct QuicSocket {
    transport: Transport,
    rx: mpsc::Receiver<(SocketAddr, ChitchatMessage)>,
    sent: Arc<GossipSent>,
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
            sent: Arc::clone(&self.sent),
        }))
    }
}

#[async_trait::async_trait]
impl Socket for QuicSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        if !gossips_to(self.sent.only_to.read().expect("only_to").as_ref(), to) {
            // Not sent, and not a failure: a client hears other clients
            // through the members.
            return Ok(());
        }
        let payload = Bytes::from(msg.serialize_to_vec());
        self.sent.messages.fetch_add(1, Ordering::Relaxed);
        self.sent
            .bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        let transport = self.transport.clone();
        let sent = Arc::clone(&self.sent);
        // Never wait here: a peer that is slow to connect must not hold up
        // gossip with the others. Failures are failures to gossip, which the
        // failure detector accounts for.
        tokio::spawn(async move {
            let result = transport.send(to, Message::Gossip(payload)).await;
            if let Err(super::transport::TransportError::Refused { .. }) = result {
                sent.refused.fetch_add(1, Ordering::Relaxed);
            }
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
    /// originated. A hint only (anyone who gossips can write it): a
    /// receiver never takes it as seen, it only waits for the origin's own
    /// word and flushes if that does not come (see `sequence`).
    pub const INVALIDATION_HWM: &str = "inv_hwm";
    /// The node id of the raft leader, as this member last heard (members
    /// only): a hint clients show in their diagnostics.
    pub const RAFT_LEADER: &str = "raft_leader";
    /// "1" once the node has started a graceful leave.
    pub const LEAVING: &str = "leaving";
    /// The cluster incarnation the member belongs to, in hex (members
    /// only, once Raft gave them one): the leader never admits a process of
    /// another incarnation.
    pub const INCARNATION: &str = "incarnation";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zstd frame that inflates to 65,535 zero bytes from 11 bytes: one
    /// run-length block (RFC 8878).
    fn zstd_bomb_frame() -> Vec<u8> {
        let mut f = vec![0x28, 0xb5, 0x2f, 0xfd]; // magic
        f.push(0x60); // single segment, 2-byte content size
        f.extend_from_slice(&(65_535u16 - 256).to_le_bytes());
        let header: u32 = 1 | (1 << 1) | (65_535 << 3); // last, RLE, size
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.push(0);
        f
    }

    fn ack_with_blocks(blocks: usize) -> Vec<u8> {
        let mut m = ChitchatMessage::BadCluster.serialize_to_vec();
        m.truncate(3); // chitchat's magic number and version
        m.push(2); // Ack
        let frame = zstd_bomb_frame();
        for _ in 0..blocks {
            m.push(1); // compressed block
            m.extend_from_slice(&(frame.len() as u16).to_le_bytes());
            m.extend_from_slice(&frame);
        }
        m.push(0);
        m
    }

    #[test]
    fn a_decompression_bomb_is_refused_before_anything_is_inflated() {
        // 4,600 blocks fit in one datagram-sized payload: 300 MB inflated.
        let bomb = ack_with_blocks(4_600);
        assert!(bomb.len() <= MAX_GOSSIP_PAYLOAD, "{}", bomb.len());
        assert!(matches!(
            check_payload(&bomb),
            Err(GossipRefused::Inflates(_))
        ));
        // A few compressed blocks, as chitchat sends, pass.
        assert_eq!(check_payload(&ack_with_blocks(4)), Ok(()));
    }

    #[test]
    fn oversized_and_malformed_payloads_are_refused() {
        let big = vec![0u8; MAX_GOSSIP_PAYLOAD + 1];
        assert_eq!(
            check_payload(&big),
            Err(GossipRefused::TooLarge(MAX_GOSSIP_PAYLOAD + 1))
        );
        let mut cut = ack_with_blocks(2);
        cut.truncate(cut.len() - 5);
        assert_eq!(check_payload(&cut), Err(GossipRefused::Malformed));
        assert_eq!(check_payload(&[1, 2]), Err(GossipRefused::Malformed));
        let mut unknown = ack_with_blocks(0);
        unknown.insert(4, 7);
        assert_eq!(check_payload(&unknown), Err(GossipRefused::Malformed));
        let bad_cluster = ChitchatMessage::BadCluster.serialize_to_vec();
        assert_eq!(check_payload(&bad_cluster), Ok(()));
    }

    #[test]
    fn a_client_gossips_only_to_its_seeds_and_the_members_it_knows() {
        let (seed, member, other_client) = (
            ([127, 0, 0, 1], 1).into(),
            ([127, 0, 0, 1], 2).into(),
            ([127, 0, 0, 1], 3).into(),
        );
        let allowed: HashSet<SocketAddr> = [seed, member].into();
        assert!(gossips_to(Some(&allowed), seed));
        assert!(gossips_to(Some(&allowed), member));
        assert!(!gossips_to(Some(&allowed), other_client));
        // A member gossips with everyone, clients included.
        assert!(gossips_to(None, other_client));
    }

    #[test]
    fn the_bomb_frame_is_real_zstd_that_chitchat_would_inflate() {
        // chitchat decodes it (into zero bytes that then fail to parse as
        // delta operations): the cap above is what keeps it from inflating.
        let mut buf = &ack_with_blocks(1)[..];
        let err = ChitchatMessage::deserialize(&mut buf).unwrap_err();
        assert!(!format!("{err:#}").contains("decompress"), "{err:#}");
    }
}
