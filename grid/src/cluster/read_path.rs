//! The read path's driver: reads and puts that go to a key's owner, and the
//! owner's side of a put. The decisions (where to go, whether to retry or
//! fall back) come from [`super::routing`]; this file only performs them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hydracache_protocol::{
    Entry, ErrorCode, Fetch, FetchReply, Message, NodeIdentity, Put, PutReply,
};

use super::node::Node;
use super::owner_load::Stored;
use super::routing::{route, Attempts, Failure, Next, Route};
use super::sequence::Received;
use super::telemetry::PeerRequest;
use super::transport::{PeerIdentity, TransportError};
use crate::error::CacheError;
use crate::events::{CacheEvent, EventOrigin};
use crate::invalidation::Invalidation;
use crate::remote::{Fetched, PutAt, RemoteEntry};

/// Tries per request before falling back (within the request deadline):
/// with the backoff in `routing.rs` (2 ms doubling to 100 ms) about 0.6 s of
/// waiting for a view to settle, so the deadline usually decides.
const MAX_ATTEMPTS: u32 = 12;

/// What happens when no owner can be reached within a request's deadline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnerUnreachable {
    /// Serve from this node alone (default): a read misses (and
    /// `get_or_load` runs its loader here), a put is stored here and
    /// invalidated everywhere else. Counted in `local_fallbacks`.
    #[default]
    ServeLocally,
    /// Return [`CacheError::OwnerUnreachable`].
    Fail,
}

/// Counters of the read path, per node.
#[derive(Default)]
pub(super) struct ReadPathCounters {
    pub(super) remote_hits: AtomicU64,
    pub(super) remote_misses: AtomicU64,
    pub(super) wrong_owner_retries: AtomicU64,
    pub(super) local_fallbacks: AtomicU64,
    pub(super) puts_served: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A fetch's answer, shared by every concurrent miss of the key on a node.
#[derive(Clone)]
pub(super) enum SharedFetch {
    Hit(Arc<Stored>),
    Miss,
    Owned,
    Unavailable,
}

/// A request's outcome at the owner, or why there was none.
pub(super) enum Answer<T> {
    Done(T),
    Failed(Failure),
}

impl Node {
    /// Runs `ask` at the key's owner with bounded retries and a deadline.
    /// `Ok(None)` when this node owns the key.
    pub(super) async fn at_owner<T, F, Fut>(
        &self,
        key: &str,
        budget: Duration,
        mut ask: F,
    ) -> Result<Option<T>, CacheError>
    where
        F: FnMut(std::net::SocketAddr, u64, NodeIdentity, Duration) -> Fut,
        Fut: std::future::Future<Output = Answer<T>>,
    {
        let mut attempts = Attempts::new(Instant::now(), budget, MAX_ATTEMPTS);
        loop {
            let view = self.view();
            let routed_epoch = view.epoch();
            let failure = match route(&view, &self.identity, self.role, key) {
                Route::Local => return Ok(None),
                Route::NoOwner => Failure::Unreachable,
                Route::Owner { node, addr, epoch } => {
                    let Some(left) = attempts.remaining(Instant::now()) else {
                        return Err(self.fall_back(key));
                    };
                    let owner = view
                        .member(&node)
                        .map(|m| m.node.clone())
                        .unwrap_or_else(|| NodeIdentity::new(node.as_str(), 0));
                    match ask(addr, epoch, owner, left).await {
                        Answer::Done(v) => return Ok(Some(v)),
                        Answer::Failed(f) => f,
                    }
                }
            };
            match attempts.after(failure, routed_epoch, self.view().epoch(), Instant::now()) {
                Next::Retry { after } => {
                    if matches!(failure, Failure::WrongOwner { .. }) {
                        bump(&self.read_path.wrong_owner_retries);
                    }
                    tokio::time::sleep(after).await
                }
                Next::GiveUp => return Err(self.fall_back(key)),
            }
        }
    }

    /// Says what reaching no owner means for the caller: an error
    /// `OwnerUnreachable` either way; the callers turn it into local service
    /// when the setting says so, and only then is it counted as a fallback.
    fn fall_back(&self, key: &str) -> CacheError {
        if self.serve_locally() {
            bump(&self.read_path.local_fallbacks);
        }
        CacheError::OwnerUnreachable {
            key: key.to_string(),
        }
    }

    pub(super) fn serve_locally(&self) -> bool {
        self.on_unreachable == OwnerUnreachable::ServeLocally
    }

    /// A local miss: ask the owner, once for every concurrent miss of the
    /// key on this node (`super::in_flight`: a caller that saw a newer
    /// invalidation than the request in flight asks again).
    pub(super) async fn fetch_from_owner(&self, key: &str) -> Result<Fetched, CacheError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Ok(Fetched::Unavailable); // left the cluster: a local cache now
        }
        let Some(grid) = self.grid.upgrade() else {
            return Ok(Fetched::Unavailable);
        };
        let stamp = grid.stamps.of(key);
        drop(grid);
        let (shared, _) = self.fetches.run(key, stamp, || self.fetch_once(key)).await;
        Ok(match shared? {
            SharedFetch::Hit(stored) => Fetched::Hit(stored.to_remote_entry()),
            SharedFetch::Miss => Fetched::Miss,
            SharedFetch::Owned => Fetched::Owned,
            SharedFetch::Unavailable => Fetched::Unavailable,
        })
    }

    /// One Fetch at the owner, with retries and the fallback.
    async fn fetch_once(&self, key: &str) -> Result<SharedFetch, CacheError> {
        let (transport, telemetry) = (&self.transport, &self.telemetry);
        let result = self
            .at_owner(key, self.request_timeout, |addr, epoch, _, left| {
                let message = Message::Fetch(Fetch {
                    epoch,
                    key: Bytes::copy_from_slice(key.as_bytes()),
                });
                let request = transport.request_within(addr, message, left);
                async move {
                    let answer = telemetry
                        .peer_request(PeerRequest::Fetch, addr, key, request, outcome)
                        .await;
                    match answer {
                        Ok((_, Message::FetchReply(FetchReply::Hit(entry)))) => {
                            match Stored::from_entry(entry) {
                                Some(e) => Answer::Done(SharedFetch::Hit(Arc::new(e))),
                                None => Answer::Failed(Failure::Unreachable),
                            }
                        }
                        Ok((_, Message::FetchReply(FetchReply::Miss))) => {
                            Answer::Done(SharedFetch::Miss)
                        }
                        Ok((_, Message::FetchReply(FetchReply::WrongOwner { epoch }))) => {
                            Answer::Failed(Failure::WrongOwner { epoch })
                        }
                        _ => Answer::Failed(Failure::Unreachable),
                    }
                }
            })
            .await;
        match result {
            Ok(None) => Ok(SharedFetch::Owned),
            Ok(Some(fetched)) => {
                match &fetched {
                    SharedFetch::Hit(_) => bump(&self.read_path.remote_hits),
                    _ => bump(&self.read_path.remote_misses),
                }
                Ok(fetched)
            }
            Err(CacheError::OwnerUnreachable { .. }) if self.serve_locally() => {
                Ok(SharedFetch::Unavailable)
            }
            Err(e) => Err(e),
        }
    }

    /// A put: store at the owner, which invalidates the other copies.
    pub(super) async fn put_at_owner(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        tags: &[String],
    ) -> Result<PutAt, CacheError> {
        if self.stopped.load(Ordering::SeqCst) {
            // Left: a local cache. Removed and replaced: no owner can be
            // reached, and the shut copy gate keeps nothing.
            if self.removed.load(Ordering::SeqCst) {
                return Ok(PutAt::Fallback);
            }
            return Ok(PutAt::Here);
        }
        let mut entry = Entry::new(Bytes::copy_from_slice(value))
            .with_tags(tags.iter().map(|t| Bytes::copy_from_slice(t.as_bytes())));
        if let Some(ttl) = ttl {
            entry = entry.with_ttl_ms(ttl.as_millis().min(u64::MAX as u128) as u64);
        }
        let (transport, telemetry) = (&self.transport, &self.telemetry);
        // The owner waits for its invalidation's acknowledgements first.
        let budget = self.request_timeout + self.ack_timeout;
        let result = self
            .at_owner(key, budget, |addr, epoch, owner, left| {
                let message = Message::Put(Put {
                    epoch,
                    key: Bytes::copy_from_slice(key.as_bytes()),
                    entry: entry.clone(),
                });
                async move {
                    // The sequence is filed under the identity the handshake
                    // authenticated for this connection, not the view's
                    // (a restarted owner on the same address is another
                    // generation); an answer from another node is no answer.
                    let answered = |peer: &PeerIdentity| {
                        (peer.node_id == owner.id.as_str())
                            .then(|| NodeIdentity::new(peer.node_id.as_str(), peer.generation))
                    };
                    let request = transport.request_within(addr, message, left);
                    let answer = telemetry
                        .peer_request(PeerRequest::Put, addr, key, request, outcome)
                        .await;
                    match answer {
                        Ok((peer, Message::PutReply(PutReply::Stored { sequence }))) => {
                            match answered(&peer) {
                                Some(owner) => Answer::Done((owner, sequence, Vec::new())),
                                None => Answer::Failed(Failure::Unreachable),
                            }
                        }
                        Ok((
                            peer,
                            Message::PutReply(PutReply::Unacknowledged { sequence, nodes }),
                        )) => {
                            let nodes = nodes
                                .iter()
                                .map(|n| String::from_utf8_lossy(n).into_owned())
                                .collect();
                            match answered(&peer) {
                                Some(owner) => Answer::Done((owner, sequence, nodes)),
                                None => Answer::Failed(Failure::Unreachable),
                            }
                        }
                        Ok((_, Message::PutReply(PutReply::WrongOwner { epoch }))) => {
                            Answer::Failed(Failure::WrongOwner { epoch })
                        }
                        _ => Answer::Failed(Failure::Unreachable),
                    }
                }
            })
            .await;
        match result {
            Ok(None) => Ok(PutAt::Here),
            Ok(Some((owner, sequence, missing))) => {
                // The owner did not send us its invalidation for this put:
                // count it as received, so the sequence shows no gap.
                self.note_owner_sequence(&owner, sequence);
                if missing.is_empty() {
                    Ok(PutAt::Owner)
                } else {
                    Err(CacheError::Unacknowledged { nodes: missing })
                }
            }
            Err(CacheError::OwnerUnreachable { .. }) if self.serve_locally() => Ok(PutAt::Fallback),
            Err(e) => Err(e),
        }
    }

    fn note_owner_sequence(&self, owner: &NodeIdentity, sequence: u64) {
        let decision = self.sequences.lock().expect("sequences").receive(
            &owner.id,
            owner.generation,
            sequence,
            Instant::now(),
        );
        if decision == (Received::Apply { flush_first: true }) {
            self.telemetry.flushed_on_gap(&owner.id, "put_reply");
            if let Some(grid) = self.grid.upgrade() {
                grid.apply(
                    &Invalidation::Flush,
                    EventOrigin::Remote {
                        node: owner.id.to_string(),
                    },
                );
            }
        }
    }

    /// The owner's side of a put: store the sender's bytes, invalidate every
    /// other node's copy (acknowledged), answer with the sequence number.
    pub(super) async fn serve_put(&self, peer: &PeerIdentity, put: Put) -> Message {
        let key = match std::str::from_utf8(&put.key) {
            Ok(k) => k,
            Err(_) => return refuse(ErrorCode::PROTOCOL, "keys must be UTF-8"),
        };
        if let Some(epoch) = self.not_owner(peer, key, put.epoch) {
            return Message::PutReply(PutReply::WrongOwner { epoch });
        }
        let Some(tags) = utf8_tags(&put.entry.tags) else {
            return refuse(ErrorCode::PROTOCOL, "tags must be UTF-8");
        };
        let Some(grid) = self.grid.upgrade() else {
            return refuse(ErrorCode::SHUTTING_DOWN, "this node is shutting down");
        };
        let expiry = match put.entry.ttl_ms {
            Some(ms) => hydracache_storage::Expiry::After(Duration::from_millis(ms)),
            None => hydracache_storage::Expiry::Never,
        };
        grid.before_write(key);
        // Bytes of unknown shape: every typed read of them validates.
        if let Err(e) = grid
            .store
            .insert_bytes(key.as_bytes(), &put.entry.value, expiry, &tags)
        {
            return refuse(ErrorCode::REFUSED, &e.to_string());
        }
        if grid.events.active() {
            grid.events.publish(CacheEvent::Stored {
                key: key.to_string(),
                tags,
                origin: EventOrigin::Remote {
                    node: peer.node_id.to_string(),
                },
            });
        }
        drop(grid);
        bump(&self.read_path.puts_served);
        let (sequence, acked) = self
            .fan_out_except(Invalidation::Key(key.to_string()), Some(&peer.node_id))
            .await;
        Message::PutReply(match acked {
            Err(CacheError::Unacknowledged { nodes }) => PutReply::Unacknowledged {
                sequence,
                nodes: nodes.into_iter().map(Bytes::from).collect(),
            },
            _ => PutReply::Stored { sequence },
        })
    }
}

/// How a request to a peer ended, for its span: the reply's kind, or why
/// there was none.
fn outcome(answer: &Result<(PeerIdentity, Message), TransportError>) -> &'static str {
    match answer {
        Err(TransportError::Timeout { .. }) => "timeout",
        Err(_) => "unreachable",
        Ok((_, Message::FetchReply(FetchReply::Hit(_)))) => "hit",
        Ok((_, Message::FetchReply(FetchReply::Miss))) => "miss",
        Ok((_, Message::PutReply(PutReply::Stored { .. }))) => "stored",
        Ok((_, Message::PutReply(PutReply::Unacknowledged { .. }))) => "unacknowledged",
        Ok((_, Message::FetchReply(FetchReply::WrongOwner { .. })))
        | Ok((_, Message::PutReply(PutReply::WrongOwner { .. }))) => "wrong_owner",
        Ok(_) => "refused",
    }
}

fn refuse(code: ErrorCode, message: &str) -> Message {
    Message::Error {
        code,
        message: message.to_string().into(),
    }
}

pub(super) fn utf8_tags(tags: &[Bytes]) -> Option<Vec<String>> {
    tags.iter()
        .map(|t| String::from_utf8(t.to_vec()).ok())
        .collect()
}

pub(super) fn remote_entry(entry: Entry) -> Option<RemoteEntry> {
    Some(RemoteEntry {
        tags: utf8_tags(&entry.tags)?,
        ttl: entry.ttl_ms.map(Duration::from_millis),
        value: Box::new(entry.value),
    })
}
