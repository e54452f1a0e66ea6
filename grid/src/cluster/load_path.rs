//! The load path's driver: `get_or_load` misses arbitrated by the key's
//! owner through its lease table ([`super::lease`]), so that one loader runs
//! in the whole grid per miss.
//!
//! - Asker side ([`Node::load_at_owner`]): the node's one request per key
//!   (the local single flight stays in front) asks the owner with `Load`.
//!   The owner answers at once (hit, lease granted, wrong owner, wait for
//!   back-pressure) or holds the request open until the lease ends (the
//!   fill's value, the failure, or the lease itself if it expired). A member
//!   that owns the key asks its own table without a network hop.
//! - Holder side ([`Node::fill_lease`], [`Node::abandon_lease`]): after the
//!   caller's loader ran (in the core), the same bytes go to the owner as
//!   `Fill`, or the error as `Abandon`.
//! - Owner side ([`Node::serve_load`], [`Node::serve_fill`],
//!   [`Node::serve_abandon`]): drives the table; invalidations void leases
//!   ([`Node::void_leases`], called by the core before its store changes),
//!   an epoch change sends the waiters of keys that moved to the new owner,
//!   and a timer task expires silent holders' leases.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hydracache_protocol::{Abandon, Entry, ErrorCode, Fill, Load, LoadReply, Message};
use tokio::sync::{oneshot, Notify};

use super::lease::{Acquire, Filled, Holder, LeaseTable};
use super::node::Node;
use super::ownership::MembershipView;
use super::read_path::{remote_entry, utf8_tags, Answer};
use super::routing::{route, Failure, Route};
use super::transport::PeerIdentity;
use crate::error::CacheError;
use crate::grid::GridInner;
use crate::invalidation::Invalidation;
use crate::remote::{Lease, Leased};

/// Leases one peer may hold or wait on at once at this owner; beyond it the
/// peer is answered `Wait` (its local single flight sends one request per
/// key, so this bounds the keys it loads at once through this owner).
const LEASES_PER_PEER: usize = 4096;

/// How long a peer past its bound is told to wait before asking again.
const BUSY_RETRY_MS: u32 = 10;

/// How a parked asker is answered.
type Parked = oneshot::Sender<LoadReply>;

/// Lease counters, per node (as owner, except `joined` which counts both).
#[derive(Default)]
pub(super) struct LeaseCounters {
    pub(super) granted: AtomicU64,
    pub(super) joined: AtomicU64,
    pub(super) expired: AtomicU64,
    pub(super) voided: AtomicU64,
    pub(super) fills_refused: AtomicU64,
}

/// The owner's side: its lease table and the timer's wake-up.
pub(super) struct Leases {
    table: Mutex<LeaseTable<Parked>>,
    wake: Arc<Notify>,
    pub(super) timeout: Duration,
    pub(super) counters: LeaseCounters,
}

impl Leases {
    /// A table whose leases last `timeout`; tokens are 64 bits from the
    /// operating system's CSPRNG (through ring, rustls' provider).
    pub(super) fn new(timeout: Duration) -> Self {
        let random = rustls::crypto::ring::default_provider().secure_random;
        let tokens = Box::new(move || {
            let mut bytes = [0u8; 8];
            random
                .fill(&mut bytes)
                .expect("the operating system's random source");
            u64::from_le_bytes(bytes)
        });
        Leases {
            table: Mutex::new(LeaseTable::new(tokens, timeout, LEASES_PER_PEER)),
            wake: Arc::new(Notify::new()),
            timeout,
            counters: LeaseCounters::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseTable<Parked>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What the owner's table decided for an asker.
enum Arbitrated {
    /// The store has the key (with its entry for a remote asker).
    Present(Option<Entry>),
    Granted(u64),
    Busy,
    Parked(oneshot::Receiver<LoadReply>),
}

fn entry_of(entry: &hydracache_storage::EntryRef<'_>) -> Entry {
    let mut e = Entry::new(entry.to_bytes())
        .with_tags(entry.tags().map(Bytes::copy_from_slice).collect::<Vec<_>>());
    if let Some(ttl) = entry.ttl_remaining() {
        e = e.with_ttl_ms(ttl.as_millis() as u64);
    }
    e
}

fn holder(peer: &PeerIdentity) -> Holder {
    Holder::new(peer.node_id.to_string(), peer.generation)
}

fn answer(waiters: Vec<Parked>, reply: &LoadReply) {
    for w in waiters {
        let _ = w.send(reply.clone());
    }
}

impl Node {
    fn me(&self) -> Holder {
        Holder::new(self.identity.id.to_string(), self.identity.generation)
    }

    /// The table's decision for `who`, taken with the store check under the
    /// table's lock, so that a fill landing meanwhile is either seen in the
    /// store or has not yet ended its lease (which the asker then joins).
    /// An asker this node's membership does not admit (it left, was
    /// removed, or is not admitted yet) may join a lease but not hold one:
    /// its fill might never come, and nothing would end its lease before
    /// the timeout.
    fn arbitrate(
        &self,
        grid: &GridInner,
        key: &str,
        tags: &[String],
        who: Holder,
        with_entry: bool,
    ) -> Arbitrated {
        let view = self.view();
        let may_hold = view.is_admitted(&who.node, who.generation);
        let mut table = self.leases.lock();
        if let Some(entry) = grid.store.get_ref(key.as_bytes()) {
            return Arbitrated::Present(with_entry.then(|| entry_of(&entry)));
        }
        let (tx, rx) = oneshot::channel();
        if !may_hold {
            return match table.join(key, who, tx) {
                Ok(()) => {
                    bump(&self.leases.counters.joined);
                    Arbitrated::Parked(rx)
                }
                Err(_) => Arbitrated::Busy,
            };
        }
        match table.acquire(key, tags, view.epoch(), Instant::now(), who, tx) {
            Acquire::Granted { token, .. } => {
                drop(table);
                bump(&self.leases.counters.granted);
                self.leases.wake.notify_one();
                Arbitrated::Granted(token)
            }
            Acquire::Joined => {
                bump(&self.leases.counters.joined);
                Arbitrated::Parked(rx)
            }
            Acquire::Busy { .. } => Arbitrated::Busy,
        }
    }

    /// The owner's side of a `Load` from a peer.
    pub(super) async fn serve_load(&self, peer: &PeerIdentity, load: Load) -> Message {
        let Ok(key) = std::str::from_utf8(&load.key) else {
            return refuse(ErrorCode::PROTOCOL, "keys must be UTF-8");
        };
        let Some(tags) = utf8_tags(&load.tags) else {
            return refuse(ErrorCode::PROTOCOL, "tags must be UTF-8");
        };
        if let Some(epoch) = self.not_owner(peer, key, load.epoch) {
            return Message::LoadReply(LoadReply::WrongOwner { epoch });
        }
        let Some(grid) = self.grid.upgrade() else {
            return refuse(ErrorCode::SHUTTING_DOWN, "this node is shutting down");
        };
        let decided = self.arbitrate(&grid, key, &tags, holder(peer), true);
        drop(grid);
        Message::LoadReply(match decided {
            Arbitrated::Present(entry) => LoadReply::Hit(entry.expect("asked for the entry")),
            Arbitrated::Granted(token) => LoadReply::Granted { token },
            Arbitrated::Busy => LoadReply::Wait {
                retry_after_ms: BUSY_RETRY_MS,
            },
            // Held open until the lease ends; a table that went away (the
            // node is stopping) sends the asker back to routing.
            Arbitrated::Parked(rx) => rx.await.unwrap_or(LoadReply::Wait {
                retry_after_ms: BUSY_RETRY_MS,
            }),
        })
    }

    /// The owner's side of a `Fill`: store it if the lease allows, and answer
    /// the waiters either way.
    pub(super) fn serve_fill(&self, peer: &PeerIdentity, fill: Fill) {
        let Ok(key) = std::str::from_utf8(&fill.key) else {
            bump(&self.leases.counters.fills_refused);
            return;
        };
        let Some(grid) = self.grid.upgrade() else {
            return;
        };
        self.settle_fill(&grid, key, fill.token, &holder(peer), fill.entry, true);
    }

    /// Ends the lease `token` of `from` with `entry`: stored here if `store`
    /// and the table allows (under its lock, so an invalidation either voided
    /// the lease first or removes the value after), then every waiter gets
    /// the value (kept or not).
    fn settle_fill(
        &self,
        grid: &GridInner,
        key: &str,
        token: u64,
        from: &Holder,
        entry: Entry,
        store: bool,
    ) {
        let epoch = self.view().epoch();
        let mut table = self.leases.lock();
        let (stored, waiters) = match table.fill(key, token, from, epoch) {
            Filled::Store { waiters } => {
                let stored = !store || self.store_fill(grid, key, &entry);
                (stored, waiters)
            }
            Filled::Refused { waiters, .. } => {
                bump(&self.leases.counters.fills_refused);
                (false, waiters)
            }
        };
        drop(table);
        let reply = if stored {
            LoadReply::Hit(entry)
        } else {
            LoadReply::Loaded(entry)
        };
        answer(waiters, &reply);
    }

    /// Stores a holder's bytes as the owner's entry (bytes of unknown shape:
    /// every typed read validates them). False if the store refused them.
    fn store_fill(&self, grid: &GridInner, key: &str, entry: &Entry) -> bool {
        let Some(tags) = utf8_tags(&entry.tags) else {
            return false;
        };
        let expiry = match entry.ttl_ms {
            Some(ms) => hydracache_storage::Expiry::After(Duration::from_millis(ms)),
            None => hydracache_storage::Expiry::Never,
        };
        grid.store
            .insert_bytes(key.as_bytes(), &entry.value, expiry, &tags)
            .is_ok()
    }

    /// The owner's side of an `Abandon`: the waiters get the failure.
    pub(super) fn serve_abandon(&self, peer: &PeerIdentity, abandon: Abandon) {
        let Ok(key) = std::str::from_utf8(&abandon.key) else {
            return;
        };
        let waiters = self
            .leases
            .lock()
            .abandon(key, abandon.token, &holder(peer));
        answer(
            waiters,
            &LoadReply::Failed {
                node: peer.node_id.as_str().into(),
                message: abandon.message,
            },
        );
    }

    /// Called by the core before an invalidation (or a write) changes its
    /// store: leases it concerns are voided.
    pub(super) fn void_leases(&self, inv: &Invalidation) {
        let voided = {
            let mut table = self.leases.lock();
            match inv {
                Invalidation::Key(key) => table.invalidate_key(key),
                Invalidation::Tags(tags) => table.invalidate_tags(tags),
                Invalidation::Flush => table.flush(),
            }
        };
        self.leases
            .counters
            .voided
            .fetch_add(voided as u64, Ordering::Relaxed);
    }

    /// The membership moved: leases of keys this node no longer owns are
    /// dropped and their waiters sent to the new owner.
    pub(super) fn move_leases(&self, view: &MembershipView) {
        let me = self.identity.clone();
        let waiters = self.leases.lock().change_epoch(view.epoch(), |key| {
            route(view, &me, self.role, key) == Route::Local
        });
        answer(
            waiters,
            &LoadReply::WrongOwner {
                epoch: view.epoch(),
            },
        );
        // A holder the membership no longer admits (it left, or was
        // removed) will never fill: its leases pass to their first waiters
        // now rather than at the lease timeout.
        let regranted = self
            .leases
            .lock()
            .release_holders(Instant::now(), view.epoch(), |h| {
                !view.is_admitted(&h.node, h.generation)
            });
        self.regrant(regranted);
    }

    /// Expires the leases whose holders stayed silent; the first waiter of
    /// each gets the lease.
    fn expire_leases(&self) {
        let view = self.view();
        let regranted = self
            .leases
            .lock()
            .expire(Instant::now(), view.epoch(), |h| {
                view.is_admitted(&h.node, h.generation)
            });
        self.regrant(regranted);
    }

    /// Tells each lease's new holder it holds it.
    fn regrant(&self, regranted: Vec<super::lease::Regranted<Parked>>) {
        for r in regranted {
            bump(&self.leases.counters.expired);
            bump(&self.leases.counters.granted);
            // An asker that gave up meanwhile leaves the lease to expire
            // again and pass to the next waiter.
            let _ = r.asker.send(LoadReply::Granted { token: r.token });
        }
    }

    // ---- the asker's side ---------------------------------------------------

    /// A `get_or_load` miss: the owner's decision for this node.
    pub(super) async fn load_at_owner(
        &self,
        key: &str,
        tags: &[String],
    ) -> Result<Leased, CacheError> {
        let deadline = Instant::now() + self.request_timeout + self.leases.timeout;
        loop {
            if self.detached() {
                // Leaving, left or removed: no owner would let this process
                // hold a lease (it might never fill it), and it is about to
                // be (or already is) a local cache: it loads for itself.
                return Ok(Leased::Local);
            }
            let budget = deadline.saturating_duration_since(Instant::now());
            let result = self.ask_owner_to_load(key, tags, budget).await;
            let outcome = match result {
                Ok(Some(leased)) => {
                    // The owner answered over the network: with a value (a
                    // remote hit), or with a lease to load it (a remote miss).
                    match &leased {
                        Ok(Leased::Hit(_) | Leased::Loaded(_)) => bump(&self.read_path.remote_hits),
                        Ok(Leased::Granted(_)) => bump(&self.read_path.remote_misses),
                        _ => {}
                    }
                    leased
                }
                Ok(None) => match self.load_here(key, tags, deadline).await {
                    // The key moved away while this node's caller waited.
                    None if Instant::now() < deadline => continue,
                    None => Err(self.fall_back_load(key)),
                    Some(leased) => leased,
                },
                Err(e) => Err(e),
            };
            return match outcome {
                Err(CacheError::OwnerUnreachable { .. })
                    if self.on_unreachable == super::read_path::OwnerUnreachable::ServeLocally =>
                {
                    Ok(Leased::Local)
                }
                other => other,
            };
        }
    }

    fn fall_back_load(&self, key: &str) -> CacheError {
        // Counted only when this node then serves locally (as `fall_back`).
        if self.serve_locally() {
            bump(&self.read_path.local_fallbacks);
        }
        CacheError::OwnerUnreachable {
            key: key.to_string(),
        }
    }

    /// Asks the owner over the network; `Ok(None)` when this node owns the key.
    async fn ask_owner_to_load(
        &self,
        key: &str,
        tags: &[String],
        budget: Duration,
    ) -> Result<Option<Result<Leased, CacheError>>, CacheError> {
        let transport = &self.transport;
        let wire_tags: Vec<Bytes> = tags
            .iter()
            .map(|t| Bytes::copy_from_slice(t.as_bytes()))
            .collect();
        self.at_owner(key, budget, |addr, epoch, owner, left| {
            let message = Message::Load(Load {
                epoch,
                key: Bytes::copy_from_slice(key.as_bytes()),
                tags: wire_tags.clone(),
            });
            async move {
                let until = Instant::now() + left;
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    let reply = transport.request_within(addr, message.clone(), left).await;
                    let reply = match reply {
                        // A lease is the answerer's to give: an answer from
                        // another node than the owner routed to is no answer.
                        Ok((peer, Message::LoadReply(r))) if peer.node_id == owner.id.as_str() => r,
                        _ => return Answer::Failed(Failure::Unreachable),
                    };
                    return match reply {
                        LoadReply::Wait { .. } if self.detached() => {
                            Answer::Done(Ok(Leased::Local))
                        }
                        LoadReply::Wait { retry_after_ms } => {
                            let pause = Duration::from_millis(u64::from(retry_after_ms));
                            if Instant::now() + pause >= until {
                                return Answer::Failed(Failure::Unreachable);
                            }
                            tokio::time::sleep(pause).await;
                            continue;
                        }
                        LoadReply::WrongOwner { epoch } => {
                            Answer::Failed(Failure::WrongOwner { epoch })
                        }
                        other => match leased(key, other, Some(addr)) {
                            Some(result) => Answer::Done(result),
                            None => Answer::Failed(Failure::Unreachable),
                        },
                    };
                }
            }
        })
        .await
    }

    /// This member owns the key: its own table decides, without a network
    /// hop. `None` if the key moved to another owner meanwhile.
    async fn load_here(
        &self,
        key: &str,
        tags: &[String],
        deadline: Instant,
    ) -> Option<Result<Leased, CacheError>> {
        loop {
            let grid = self.grid.upgrade()?;
            let decided = self.arbitrate(&grid, key, tags, self.me(), false);
            drop(grid);
            let reply = match decided {
                Arbitrated::Present(_) => return Some(Ok(Leased::Present)),
                Arbitrated::Granted(token) => {
                    return Some(Ok(Leased::Granted(Lease { token, at: None })))
                }
                Arbitrated::Busy => LoadReply::Wait {
                    retry_after_ms: BUSY_RETRY_MS,
                },
                Arbitrated::Parked(rx) => rx.await.ok()?,
            };
            match reply {
                LoadReply::Wait { retry_after_ms } => {
                    if Instant::now() >= deadline {
                        return Some(Err(self.fall_back_load(key)));
                    }
                    tokio::time::sleep(Duration::from_millis(u64::from(retry_after_ms))).await;
                }
                LoadReply::WrongOwner { .. } => return None,
                other => return leased(key, other, None),
            }
        }
    }

    /// The lease holder's loader produced `value`: hand it to the owner.
    pub(super) async fn fill_lease(
        &self,
        key: &str,
        lease: Lease,
        value: &[u8],
        ttl: Option<Duration>,
        tags: &[String],
    ) {
        let mut entry = Entry::new(Bytes::copy_from_slice(value))
            .with_tags(tags.iter().map(|t| Bytes::copy_from_slice(t.as_bytes())));
        if let Some(ttl) = ttl {
            entry = entry.with_ttl_ms(ttl.as_millis().min(u64::MAX as u128) as u64);
        }
        match lease.at {
            // The core stored the value here already.
            None => {
                if let Some(grid) = self.grid.upgrade() {
                    self.settle_fill(&grid, key, lease.token, &self.me(), entry, false);
                }
            }
            Some(addr) => {
                let fill = Message::Fill(Fill {
                    token: lease.token,
                    key: Bytes::copy_from_slice(key.as_bytes()),
                    entry,
                });
                // Lost: the owner's lease expires and passes to a waiter.
                let _ = tokio::time::timeout(self.request_timeout, self.transport.send(addr, fill))
                    .await;
            }
        }
    }

    /// The lease holder's loader failed with `message`: the owner's waiters
    /// get it, and the lease ends.
    pub(super) async fn abandon_lease(&self, key: &str, lease: Lease, message: String) {
        match lease.at {
            None => {
                let waiters = self.leases.lock().abandon(key, lease.token, &self.me());
                answer(
                    waiters,
                    &LoadReply::Failed {
                        node: self.identity.id.as_str().into(),
                        message: message.as_str().into(),
                    },
                );
            }
            Some(addr) => {
                let abandon = Message::Abandon(Abandon {
                    token: lease.token,
                    key: Bytes::copy_from_slice(key.as_bytes()),
                    message: message.as_str().into(),
                });
                let _ =
                    tokio::time::timeout(self.request_timeout, self.transport.send(addr, abandon))
                        .await;
            }
        }
    }
}

/// What a final answer means for the asker; `None` for bytes that are not
/// an entry this node can take (tags that are not UTF-8).
fn leased(
    key: &str,
    reply: LoadReply,
    at: Option<std::net::SocketAddr>,
) -> Option<Result<Leased, CacheError>> {
    Some(match reply {
        LoadReply::Hit(entry) => Ok(Leased::Hit(remote_entry(entry)?)),
        LoadReply::Loaded(entry) => Ok(Leased::Loaded(remote_entry(entry)?)),
        LoadReply::Granted { token } => Ok(Leased::Granted(Lease { token, at })),
        LoadReply::Failed { node, message } => Err(CacheError::LoadFailedOn {
            node: node.to_string(),
            key: key.to_string(),
            message: message.to_string(),
        }),
        LoadReply::Wait { .. } | LoadReply::WrongOwner { .. } => return None,
    })
}

fn refuse(code: ErrorCode, message: &str) -> Message {
    Message::Error {
        code,
        message: message.to_string().into(),
    }
}

/// Expires silent holders' leases for as long as the node lives: sleeps
/// until the next lease is due (or a new lease is granted), then expires.
pub(super) async fn run_lease_timer(node: Weak<Node>) {
    loop {
        let (wake, due) = {
            let Some(node) = node.upgrade() else { return };
            if node.stopped.load(Ordering::SeqCst) {
                return;
            }
            let due = node.leases.lock().next_expiry();
            (Arc::clone(&node.leases.wake), due)
        };
        // Wake at least every second to notice a dropped node.
        let until = due
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
            .min(Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => {}
            _ = wake.notified() => {}
        }
        let Some(node) = node.upgrade() else { return };
        node.expire_leases();
    }
}
