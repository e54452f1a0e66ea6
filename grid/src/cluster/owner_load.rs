//! Named owner loaders on a node: the registry a member builds
//! (`NodeBuilder::loader`), the owner's side of an OwnerLoad (run the loader
//! once for every concurrent asker, store the result, answer with the
//! stored bytes) and the asker's side (one request per key per node, routed
//! to the owner with the read path's retries and fallback).
//!
//! Only names and argument bytes travel; the loaders themselves are
//! closures registered on each member, type-erased here to "encode the
//! value, and fill the store with it as its type".

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use hydracache_protocol::{
    Entry, ErrorCode, Message, OwnerLoad as OwnerLoadMessage, OwnerLoadReply,
};
use hydracache_storage::{Expiry, FillOutcome, FillTicket, Store};

use super::in_flight::InFlight;
use super::node::Node;
use super::read_path::{remote_entry, utf8_tags, Answer};
use super::routing::Failure;
use crate::codec::{CacheValue, Codec, Encoded};
use crate::error::CacheError;
use crate::events::{CacheEvent, EventOrigin};
use crate::grid::GridInner;
use crate::owner_load::{OwnerLoad, OwnerLoadRequest, RejectedArguments};
use crate::remote::{OwnerLoaded, RemoteEntry};

/// Default limit on the argument bytes of one named load (64 KiB).
pub(super) const DEFAULT_MAX_ARGS: usize = 64 << 10;

/// A value a loader produced: its bytes, and how to store them as its type.
struct Loaded {
    bytes: Encoded,
    fill: FillFn,
}

type FillFn = fn(&Store, FillTicket, &[u8], Expiry) -> Result<FillOutcome, CacheError>;

/// Why a loader produced no value.
enum LoaderFailure {
    Rejected(String),
    Failed(String),
}

type LoaderFuture = Pin<Box<dyn Future<Output = Result<Loaded, LoaderFailure>> + Send>>;
type LoaderFn = dyn Fn(OwnerLoadRequest) -> LoaderFuture + Send + Sync;

/// The named loaders a node was built with.
#[derive(Clone, Default)]
pub(super) struct Loaders {
    by_name: HashMap<String, Arc<LoaderFn>>,
}

impl Loaders {
    /// Registers `loader` under `name` (replacing one of the same name).
    pub(super) fn register<C, T, F, Fut, E>(&mut self, name: String, loader: F)
    where
        C: Codec,
        T: CacheValue<C>,
        F: Fn(OwnerLoadRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + 'static,
    {
        let loader = Arc::new(loader);
        let erased = move |req: OwnerLoadRequest| -> LoaderFuture {
            let loader = Arc::clone(&loader);
            Box::pin(async move {
                match loader(req).await {
                    Ok(value) => match value.encode() {
                        Ok(bytes) => Ok(Loaded {
                            bytes,
                            fill: T::fill_encoded,
                        }),
                        Err(e) => Err(LoaderFailure::Failed(e.to_string())),
                    },
                    Err(e) => {
                        let e: Box<dyn StdError + Send + Sync> = e.into();
                        Err(match e.downcast_ref::<RejectedArguments>() {
                            Some(r) => LoaderFailure::Rejected(r.reason().to_string()),
                            None => LoaderFailure::Failed(e.to_string()),
                        })
                    }
                }
            })
        };
        self.by_name.insert(name, Arc::new(erased));
    }

    fn get(&self, name: &str) -> Option<Arc<LoaderFn>> {
        self.by_name.get(name).cloned()
    }
}

/// A value as the owner stored it, shared by every asker of one load (or
/// every concurrent miss of one fetch).
pub(super) struct Stored {
    value: Bytes,
    ttl: Option<Duration>,
    tags: Vec<String>,
}

impl Stored {
    /// A reply's entry; `None` if its tags are not UTF-8.
    pub(super) fn from_entry(entry: Entry) -> Option<Self> {
        Some(Stored {
            tags: utf8_tags(&entry.tags)?,
            ttl: entry.ttl_ms.map(Duration::from_millis),
            value: entry.value,
        })
    }

    /// The value for the core (the bytes are shared, not copied).
    pub(super) fn to_remote_entry(&self) -> RemoteEntry {
        RemoteEntry {
            value: Box::new(self.value.clone()),
            ttl: self.ttl,
            tags: self.tags.clone(),
        }
    }

    fn remote_entry(&self) -> Arc<RemoteEntry> {
        Arc::new(self.to_remote_entry())
    }
}

/// A node's named loaders and the loads in flight through it.
pub(crate) struct OwnerLoads {
    loaders: Loaders,
    max_args: usize,
    timeout: Duration,
    /// Loads this node runs as the owner, by key.
    here: InFlight<Result<Arc<Stored>, CacheError>>,
    /// Requests this node sends to owners, by key.
    asked: InFlight<Result<OwnerLoaded, CacheError>>,
    /// Loader runs on this node.
    pub(super) runs: AtomicU64,
}

impl OwnerLoads {
    pub(super) fn new(loaders: Loaders, max_args: usize, timeout: Duration) -> Self {
        OwnerLoads {
            loaders,
            max_args,
            timeout,
            here: InFlight::default(),
            asked: InFlight::default(),
            runs: AtomicU64::new(0),
        }
    }
}

fn too_large(loader: &str, len: usize, limit: usize) -> CacheError {
    CacheError::ArgumentsTooLarge {
        loader: loader.to_string(),
        len,
        limit,
    }
}

/// What `grid` holds for `key` now, as the owner would answer it.
fn stored(grid: &GridInner, key: &str) -> Option<Arc<Stored>> {
    let entry = grid.store.get_ref(key.as_bytes())?;
    Some(Arc::new(Stored {
        value: entry.to_bytes(),
        ttl: entry.ttl_remaining(),
        tags: entry
            .tags()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect(),
    }))
}

impl Node {
    /// A named load on a miss of `key`: at the owner (one request per key
    /// from this node), or here when this node owns the key.
    pub(super) async fn named_load_at_owner(
        &self,
        key: &str,
        load: &OwnerLoad,
        ttl: Option<Duration>,
        tags: &[String],
    ) -> Result<OwnerLoaded, CacheError> {
        let limit = self.owner_loads.max_args;
        if load.args().len() > limit {
            return Err(too_large(load.loader(), load.args().len(), limit));
        }
        let Some(grid) = self.grid.upgrade() else {
            return Err(CacheError::Cancelled);
        };
        let stamp = grid.stamps.of(key);
        drop(grid);
        let request = || self.ask_owner(key, load, ttl, tags, stamp.keeps_copies());
        self.owner_loads.asked.run(key, stamp, request).await.0
    }

    /// `keeps`: this node kept copies when the caller began. A load it runs
    /// for want of an owner (stopped, or no owner in time) is stored only
    /// then: before, no one may send it the invalidations that would reach
    /// the value (see super::copy_gate). As the owner it stores.
    async fn ask_owner(
        &self,
        key: &str,
        load: &OwnerLoad,
        ttl: Option<Duration>,
        tags: &[String],
        keeps: bool,
    ) -> Result<OwnerLoaded, CacheError> {
        let here = |store: bool| async move {
            let stored = self
                .named_load_here(key, load.loader(), load.args(), ttl, tags, store)
                .await?;
            Ok(OwnerLoaded {
                entry: stored.remote_entry(),
                stored_here: true,
            })
        };
        if self.stopped.load(Ordering::SeqCst) {
            return here(keeps).await; // left the cluster: a local cache now
        }
        let transport = &self.transport;
        let ttl_ms = ttl.map(|t| t.as_millis().min(u64::MAX as u128) as u64);
        let wire_tags: Vec<Bytes> = tags
            .iter()
            .map(|t| Bytes::copy_from_slice(t.as_bytes()))
            .collect();
        let args = Bytes::copy_from_slice(load.args());
        let result = self
            .at_owner(key, self.owner_loads.timeout, |addr, epoch, _, left| {
                let message = Message::OwnerLoad(OwnerLoadMessage {
                    epoch,
                    loader: load.loader().into(),
                    key: Bytes::copy_from_slice(key.as_bytes()),
                    ttl_ms,
                    tags: wire_tags.clone(),
                    args: args.clone(),
                });
                async move {
                    let reply = tokio::time::timeout(left, transport.request(addr, message)).await;
                    let Ok(Ok((peer, Message::OwnerLoadReply(reply)))) = reply else {
                        return Err(Failure::Unreachable);
                    };
                    let loader = load.loader().to_string();
                    Ok(match reply {
                        OwnerLoadReply::Loaded(entry) => match remote_entry(entry) {
                            Some(entry) => Ok(Arc::new(entry)),
                            None => return Err(Failure::Unreachable),
                        },
                        OwnerLoadReply::WrongOwner { epoch } => {
                            return Err(Failure::WrongOwner { epoch })
                        }
                        OwnerLoadReply::UnknownLoader => Err(CacheError::UnknownLoader { loader }),
                        OwnerLoadReply::Rejected { message } => {
                            Err(CacheError::ArgumentsRejected {
                                loader,
                                message: message.to_string(),
                            })
                        }
                        OwnerLoadReply::ArgumentsTooLarge { limit } => {
                            Err(too_large(&loader, load.args().len(), limit as usize))
                        }
                        OwnerLoadReply::Failed { message } => Err(CacheError::OwnerLoadFailed {
                            loader,
                            node: peer.node_id.to_string(),
                            message: message.to_string(),
                        }),
                    })
                }
                .map(|answer| match answer {
                    Ok(done) => Answer::Done(done),
                    Err(failure) => Answer::Failed(failure),
                })
            })
            .await;
        match result {
            Ok(None) => here(true).await,
            Ok(Some(answer)) => answer.map(|entry| OwnerLoaded {
                entry,
                stored_here: false,
            }),
            // No owner in time: this node loads if it can and may.
            Err(CacheError::OwnerUnreachable { .. })
                if self.serve_locally()
                    && self.owner_loads.loaders.get(load.loader()).is_some() =>
            {
                here(keeps).await
            }
            Err(e) => Err(e),
        }
    }

    /// Runs the named loader as the owner of `key` (once for every
    /// concurrent asker, local or remote) unless a value is stored already;
    /// stores its value under the request's TTL and tags if `store`.
    async fn named_load_here(
        &self,
        key: &str,
        name: &str,
        args: &[u8],
        ttl: Option<Duration>,
        tags: &[String],
        store: bool,
    ) -> Result<Arc<Stored>, CacheError> {
        let Some(loader) = self.owner_loads.loaders.get(name) else {
            return Err(CacheError::UnknownLoader {
                loader: name.to_string(),
            });
        };
        let limit = self.owner_loads.max_args;
        if args.len() > limit {
            return Err(too_large(name, args.len(), limit));
        }
        let Some(grid) = self.grid.upgrade() else {
            return Err(CacheError::Cancelled);
        };
        if let Some(hit) = stored(&grid, key) {
            return Ok(hit);
        }
        let stamp = grid.stamps.of(key);
        let run = || async {
            // A load that finished just before this one started stored it.
            if let Some(hit) = stored(&grid, key) {
                return Ok(hit);
            }
            self.run_loader(&grid, &*loader, name, key, args, ttl, tags, store)
                .await
        };
        self.owner_loads.here.run(key, stamp, run).await.0
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_loader(
        &self,
        grid: &GridInner,
        loader: &LoaderFn,
        name: &str,
        key: &str,
        args: &[u8],
        ttl: Option<Duration>,
        tags: &[String],
        store: bool,
    ) -> Result<Arc<Stored>, CacheError> {
        // Taken before the loader runs: an invalidation of the key or a tag
        // while it runs keeps its value out of the store.
        let ticket = grid.store.begin_fill(key.as_bytes(), tags)?;
        let request = OwnerLoadRequest {
            key: key.to_string(),
            args: args.to_vec(),
            tags: tags.to_vec(),
            ttl,
        };
        self.owner_loads.runs.fetch_add(1, Ordering::Relaxed);
        let failed = |message: String| CacheError::OwnerLoadFailed {
            loader: name.to_string(),
            node: self.identity.id.to_string(),
            message,
        };
        let loaded = match AssertUnwindSafe(loader(request)).catch_unwind().await {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(LoaderFailure::Rejected(message))) => {
                return Err(CacheError::ArgumentsRejected {
                    loader: name.to_string(),
                    message,
                })
            }
            Ok(Err(LoaderFailure::Failed(message))) => return Err(failed(message)),
            Err(panic) => return Err(failed(format!("panicked: {}", panic_text(&*panic)))),
        };
        let expiry = match ttl {
            Some(ttl) => Expiry::After(ttl),
            None => Expiry::Never,
        };
        let bytes = loaded.bytes.bytes();
        // The value is stored as its type (validated, with its type tag);
        // if an invalidation raced the load it is not stored, and the askers
        // still get it, as the callers of a local load do.
        if store
            && (loaded.fill)(&grid.store, ticket, bytes, expiry)? == FillOutcome::Stored
            && grid.events.active()
        {
            grid.events.publish(CacheEvent::Stored {
                key: key.to_string(),
                tags: tags.to_vec(),
                origin: EventOrigin::Local,
            });
        }
        Ok(Arc::new(Stored {
            value: Bytes::copy_from_slice(bytes),
            ttl,
            tags: tags.to_vec(),
        }))
    }

    /// The owner's side of an OwnerLoad from a peer.
    pub(super) async fn serve_owner_load(
        &self,
        peer: &super::transport::PeerIdentity,
        call: OwnerLoadMessage,
    ) -> Message {
        let refuse = |message: &str| Message::Error {
            code: ErrorCode::PROTOCOL,
            message: message.to_string().into(),
        };
        let Ok(key) = std::str::from_utf8(&call.key) else {
            return refuse("keys must be UTF-8");
        };
        let Some(tags) = utf8_tags(&call.tags) else {
            return refuse("tags must be UTF-8");
        };
        if let Some(epoch) = self.not_owner(peer, key, call.epoch) {
            return Message::OwnerLoadReply(OwnerLoadReply::WrongOwner { epoch });
        }
        let ttl = call.ttl_ms.map(Duration::from_millis);
        let answer = self
            .named_load_here(key, &call.loader, &call.args, ttl, &tags, true)
            .await;
        Message::OwnerLoadReply(match answer {
            Ok(stored) => {
                let mut entry = Entry::new(stored.value.clone()).with_tags(
                    stored
                        .tags
                        .iter()
                        .map(|t| Bytes::copy_from_slice(t.as_bytes())),
                );
                if let Some(ttl) = stored.ttl {
                    entry = entry.with_ttl_ms(ttl.as_millis().min(u64::MAX as u128) as u64);
                }
                OwnerLoadReply::Loaded(entry)
            }
            Err(CacheError::UnknownLoader { .. }) => OwnerLoadReply::UnknownLoader,
            Err(CacheError::ArgumentsRejected { message, .. }) => OwnerLoadReply::Rejected {
                message: message.into(),
            },
            Err(CacheError::ArgumentsTooLarge { limit, .. }) => OwnerLoadReply::ArgumentsTooLarge {
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
            },
            Err(CacheError::OwnerLoadFailed { message, .. }) => OwnerLoadReply::Failed {
                message: message.into(),
            },
            Err(other) => OwnerLoadReply::Failed {
                message: other.to_string().into(),
            },
        })
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}
