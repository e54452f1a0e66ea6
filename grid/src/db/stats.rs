//! Per-query counters, keyed by the query's diagnostic name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Counters of one named query ([`crate::db::DbCache::query_stats`]).
///
/// `hits + misses` is the number of calls. A miss either ran the query
/// (`loads`) or shared a load that another call started or that finished
/// meanwhile; `errors` counts calls that returned an error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueryStats {
    /// The query's name (`named(..)`, the entity or collection, or the policy name).
    pub name: String,
    /// Calls answered from the cache without waiting.
    pub hits: u64,
    /// Calls that did not find a value.
    pub misses: u64,
    /// Times this query actually ran against the database.
    pub loads: u64,
    /// Calls that returned an error.
    pub errors: u64,
}

impl QueryStats {
    /// Calls: hits + misses.
    pub fn total_requests(&self) -> u64 {
        self.hits + self.misses
    }

    /// hits / (hits + misses); `None` before the first call.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = hydracache::db::DbCache::new(hydracache::Grid::local().build(), "app");
    /// for _ in 0..4 {
    ///     let _: u32 = db.named("answer").key("answer")
    ///         .fetch_with(|| async { Ok::<_, sqlx::Error>(42) }).await.unwrap();
    /// }
    /// let s = &db.query_stats()[0];
    /// assert_eq!((s.total_requests(), s.hit_ratio()), (4, Some(0.75)));
    /// # });
    /// ```
    pub fn hit_ratio(&self) -> Option<f64> {
        let calls = self.total_requests();
        (calls > 0).then(|| self.hits as f64 / calls as f64)
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn load(&self) {
        self.loads.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Name -> counters. Reads take the read lock; a name is inserted once.
#[derive(Default)]
pub(crate) struct Registry {
    map: RwLock<HashMap<String, Arc<Counters>>>,
}

impl Registry {
    pub(crate) fn counters(&self, name: &str) -> Arc<Counters> {
        if let Some(c) = self.map.read().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Arc::clone(c);
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(name.to_string()).or_default())
    }

    pub(crate) fn snapshot(&self) -> Vec<QueryStats> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<QueryStats> = map
            .iter()
            .map(|(name, c)| QueryStats {
                name: name.to_string(),
                hits: c.hits.load(Ordering::Relaxed),
                misses: c.misses.load(Ordering::Relaxed),
                loads: c.loads.load(Ordering::Relaxed),
                errors: c.errors.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
