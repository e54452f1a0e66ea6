//! Single-flight loading: concurrent misses for one key share one load.
//!
//! The first caller (the leader) registers a flight and spawns the loader as
//! its own task, so dropping any caller — the leader included — does not
//! cancel the load for the others. Every caller, leader or not, waits on the
//! flight's watch channel for the shared outcome. An invalidation of the key
//! or one of the flight's tags detaches the flight, so later callers start a
//! fresh load instead of joining the stale one.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hydracache_storage::{FillTicket, Store};
use tokio::sync::watch;

use crate::error::CacheError;
use crate::options::CacheOptions;

/// A load's outcome as every waiter sees it: the value (type-erased, shared)
/// or the error.
pub(crate) type Outcome = Result<Arc<dyn Any + Send + Sync>, CacheError>;

/// One load in flight.
pub(crate) struct Flight {
    tags: Vec<String>,
    rx: watch::Receiver<Option<Outcome>>,
}

impl Flight {
    /// Waits for the outcome and clones the value out as `T`.
    pub(crate) async fn wait<T: Clone + 'static>(&self, key: &str) -> Result<T, CacheError> {
        let mut rx = self.rx.clone();
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().expect("waited for Some"),
            Err(_) => return Err(CacheError::Cancelled),
        };
        let value = outcome?;
        value
            .downcast_ref::<T>()
            .cloned()
            .ok_or_else(|| CacheError::TypeMismatch {
                key: key.to_string(),
                expected: std::any::type_name::<T>(),
            })
    }
}

/// What `join_or_start` decided.
pub(crate) enum Joined {
    /// A value appeared in the store meanwhile: read it.
    Present,
    /// Another caller's load is in flight: wait for it.
    Follower(Arc<Flight>),
    /// This caller starts the load.
    Leader {
        flight: Arc<Flight>,
        tx: watch::Sender<Option<Outcome>>,
        ticket: FillTicket,
    },
}

#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, Arc<Flight>>>,
}

impl Flights {
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Flight>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the load in flight for `key`, or starts one: the fill ticket is
    /// taken under the same lock that invalidations hold while they detach
    /// flights, so a flight is never registered with a stale snapshot.
    pub(crate) fn join_or_start(
        &self,
        key: &str,
        options: &CacheOptions,
        store: &Store,
    ) -> Result<Joined, CacheError> {
        let mut map = self.lock();
        if let Some(flight) = map.get(key) {
            return Ok(Joined::Follower(Arc::clone(flight)));
        }
        if store.contains_key(key.as_bytes()) {
            return Ok(Joined::Present);
        }
        let ticket = store.begin_fill(key.as_bytes(), options.tags.as_slice())?;
        let (tx, rx) = watch::channel(None);
        let flight = Arc::new(Flight {
            tags: options.tags.as_slice().to_vec(),
            rx,
        });
        map.insert(key.to_string(), Arc::clone(&flight));
        Ok(Joined::Leader { flight, tx, ticket })
    }

    /// Removes the flight for `key` if it is still `flight`.
    pub(crate) fn finish(&self, key: &str, flight: &Arc<Flight>) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
        }
    }

    /// Number of loads in flight.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Detaches flights so that later callers start fresh loads.
pub(crate) fn detach_key(map: &mut HashMap<String, Arc<Flight>>, key: &str) {
    map.remove(key);
}

/// Detaches every flight that carries one of `tags`.
pub(crate) fn detach_tags(map: &mut HashMap<String, Arc<Flight>>, tags: &[String]) {
    map.retain(|_, f| !f.tags.iter().any(|t| tags.contains(t)));
}
