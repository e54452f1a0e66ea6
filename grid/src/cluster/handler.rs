//! Serves peers' frames for a node: routes each request or one-way message
//! to the part of the node that answers it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hydracache_protocol::{ErrorCode, Message, NodeIdentity, Role};

use super::authority::takes_raft;
use super::node::Node;
use super::ownership::MembershipView;
use super::raft::raft_id;
use super::transport::{Handler, PeerIdentity, Reply};

/// Serves peers' frames for a node.
pub(super) struct NodeHandler(pub(super) Arc<Node>);

impl Handler for NodeHandler {
    fn request<'a>(&'a self, peer: &'a PeerIdentity, message: Message) -> Reply<'a> {
        Box::pin(async move {
            match message {
                Message::Invalidate(_) if self.0.partitioned.load(Ordering::SeqCst) => {
                    Message::Error {
                        code: ErrorCode::REFUSED,
                        message: "partitioned (test hook)".into(),
                    }
                }
                Message::Invalidate(_) | Message::HighWater(_)
                    if self.0.is_cut_from(&peer.node_id) =>
                {
                    Message::Error {
                        code: ErrorCode::REFUSED,
                        message: "link cut (test hook)".into(),
                    }
                }
                Message::Invalidate(inv) if !self.0.may_speak_for(peer, &inv) => Message::Error {
                    code: ErrorCode::REFUSED,
                    message: format!(
                        "{} may not send invalidations as {}",
                        peer.node_id, inv.origin.id
                    )
                    .into(),
                },
                Message::Invalidate(inv) => {
                    let reply = self.0.receive(&inv);
                    if matches!(reply, Message::InvalidateAck { .. })
                        && self.0.role == Role::Member
                        && peer.role == Role::Client
                    {
                        // Relay a client's invalidation to the other clients.
                        if let Err(e) = self.0.relay_to_clients(inv).await {
                            return Message::Error {
                                code: ErrorCode::INTERNAL,
                                message: e.to_string().into(),
                            };
                        }
                    }
                    reply
                }
                Message::HighWater(mark) => self.0.receive_high_water(peer, mark).await,
                Message::Ping { nonce } => Message::Pong { nonce },
                Message::Fetch(fetch) => self.0.fetch(peer, &fetch),
                Message::Put(put) => self.0.serve_put(peer, put).await,
                Message::Load(load) => self.0.serve_load(peer, load).await,
                Message::OwnerLoad(call) => self.0.serve_owner_load(peer, call).await,
                other => Message::Error {
                    code: ErrorCode::REFUSED,
                    message: format!("{:?} is not served by this node", other.kind()).into(),
                },
            }
        })
    }

    fn message(&self, peer: &PeerIdentity, message: Message) {
        if matches!(message, Message::Gossip(_) | Message::Raft(_)) {
            // The process's own word that it runs (see authority::reconcile).
            self.0
                .telemetry
                .spoke(&peer.node_id, peer.generation, std::time::Instant::now());
        }
        match message {
            Message::Gossip(bytes) => {
                self.0.inbox.deliver(peer.addr, &bytes);
            }
            Message::Fill(fill) => self.0.serve_fill(peer, fill),
            Message::Abandon(abandon) => self.0.serve_abandon(peer, abandon),
            Message::Invalidate(inv) if self.0.may_speak_for(peer, &inv) => {
                let applied = matches!(self.0.receive(&inv), Message::InvalidateAck { .. });
                if applied && self.0.role == Role::Member && peer.role == Role::Client {
                    let node = Arc::clone(&self.0);
                    tokio::spawn(async move {
                        let _ = node.relay_to_clients(inv).await;
                    });
                }
            }
            Message::Raft(bytes) => {
                // Only from an admitted member, or one still in the Raft
                // configuration (see authority::takes_raft), under the raft
                // id of the connection's certified identity.
                let view = self.0.view();
                if let Some(consensus) = self.0.consensus.get() {
                    let from = raft_id(&peer.node_id, peer.generation);
                    let configured = consensus.in_configuration(from);
                    if takes_raft(&view, &self.0.identity, peer, configured) {
                        consensus.deliver(from, bytes);
                    }
                }
            }
            Message::GoAway {
                code: ErrorCode::SHUTTING_DOWN,
                ..
            } => self.0.announced_leaving(peer),
            Message::MetadataSnapshot(snapshot) => {
                // Only a newer view, from a member the current view admits
                // (the first view: from a seed that view admits).
                let next = MembershipView::from(snapshot);
                let sender = NodeIdentity::new(peer.node_id.clone(), peer.generation);
                let from_seed = self.0.seeds.contains(&peer.addr);
                if self.0.view().adopts(&sender, peer.role, from_seed, &next) {
                    self.0.on_new_view(next, false);
                }
            }
            _ => {}
        }
    }
}
