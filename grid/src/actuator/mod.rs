//! A read-only HTTP actuator for operators (feature `actuator`): health,
//! per-cache stats and diagnostics, the cluster view, Prometheus metrics and
//! a live dashboard page, as an [`axum::Router`] the application nests
//! where it likes.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use hydracache::actuator::Actuator;
//! use hydracache::Grid;
//!
//! let grid = Grid::local().build();
//! let actuator = Actuator::new().cache("main", grid.clone()).router();
//! let app: axum::Router = axum::Router::new().nest("/actuator", actuator);
//! # let _ = app;
//! # });
//! ```
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the dashboard page |
//! | `GET /health` | `up` (200) or `down` (503) with reasons, per cache |
//! | `GET /caches` | the caches with mode, entries, bytes, capacity, hit ratio |
//! | `GET /caches/{name}/stats` | the counters of one cache |
//! | `GET /caches/{name}/diagnostics` | counters plus entries, bytes, tags, loads in flight |
//! | `GET /cluster` | per cache: local, or the node's view of its cluster |
//! | `GET /metrics` | Prometheus exposition (OpenMetrics when asked for) |
//!
//! No route changes a cache, and no answer contains a key or a value: only
//! counts, sizes and node ids. Without a [`bearer token`](Actuator::bearer_token)
//! anyone who reaches the socket can read them, so bind it to loopback.

mod health;
mod json;
mod metrics;
mod source;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

pub use health::DEFAULT_LEADERLESS_GRACE;

use crate::codec::Codec;
use crate::grid::Grid;
use health::HealthTracker;
use source::{Snapshot, Source};

/// The dashboard: one self-contained page (inline CSS and JS, no CDN).
const DASHBOARD: &str = include_str!("dashboard.html");

/// Builds the actuator's router over one or more grids, each under a name.
///
/// ```
/// use hydracache::actuator::Actuator;
/// use hydracache::{Grid, Postcard};
/// use std::time::Duration;
///
/// let sessions = Grid::local().build();
/// let users = Grid::local().codec::<Postcard>().build();
/// let router = Actuator::new()
///     .cache("sessions", sessions)
///     .cache("users", users)
///     .bearer_token("s3cret")
///     .leaderless_grace(Duration::from_secs(5))
///     .router();
/// # let _: axum::Router = router;
/// ```
pub struct Actuator {
    caches: BTreeMap<String, Arc<dyn Source>>,
    token: Option<String>,
    grace: Duration,
}

impl Default for Actuator {
    fn default() -> Self {
        Actuator::new()
    }
}

impl std::fmt::Debug for Actuator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actuator")
            .field("caches", &self.caches.keys().collect::<Vec<_>>())
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("leaderless_grace", &self.grace)
            .finish()
    }
}

impl Actuator {
    /// An actuator with no caches, no token, and a
    /// [`DEFAULT_LEADERLESS_GRACE`].
    pub fn new() -> Self {
        Actuator {
            caches: BTreeMap::new(),
            token: None,
            grace: DEFAULT_LEADERLESS_GRACE,
        }
    }

    /// Serves `grid` under `name` (its routes are `/caches/{name}/...`).
    ///
    /// # Panics
    ///
    /// If `name` is empty, holds anything but ASCII letters, digits, `-`,
    /// `_` and `.`, or was already given: a programming error caught when
    /// the router is built, as axum does for overlapping routes.
    pub fn cache<C: Codec>(mut self, name: impl Into<String>, grid: Grid<C>) -> Self {
        let name = name.into();
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "actuator cache name {name:?}: use ASCII letters, digits, '-', '_' and '.'"
        );
        assert!(
            !self.caches.contains_key(&name),
            "actuator cache name {name:?} given twice"
        );
        self.caches.insert(name, Arc::new(grid));
        self
    }

    /// Requires `Authorization: Bearer <token>` on every route; others get
    /// 401. Without a token, bind the actuator to loopback.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How long a member may know no Raft leader before `/health` reports
    /// it down (default [`DEFAULT_LEADERLESS_GRACE`]).
    pub fn leaderless_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The router: mount it at the root or [`nest`](Router::nest) it.
    pub fn router(self) -> Router {
        let state = Arc::new(Shared {
            caches: self.caches,
            health: Mutex::new(HealthTracker::new(self.grace)),
        });
        let router = Router::new()
            .route("/", get(dashboard))
            .route("/health", get(health))
            .route("/caches", get(caches))
            .route("/caches/{name}/stats", get(stats))
            .route("/caches/{name}/diagnostics", get(diagnostics))
            .route("/cluster", get(cluster))
            .route("/metrics", get(metrics))
            .fallback(not_found)
            .with_state(state);
        match self.token {
            Some(token) => router.layer(middleware::from_fn_with_state(
                Arc::new(format!("Bearer {token}")),
                require_token,
            )),
            None => router,
        }
    }
}

struct Shared {
    caches: BTreeMap<String, Arc<dyn Source>>,
    health: Mutex<HealthTracker>,
}

type Ctx = State<Arc<Shared>>;

impl Shared {
    async fn snapshots(&self) -> Vec<(&str, Snapshot)> {
        let mut out = Vec::with_capacity(self.caches.len());
        for (name, source) in &self.caches {
            out.push((name.as_str(), source.snapshot().await));
        }
        out
    }

    async fn one(&self, name: &str) -> Result<Snapshot, Response> {
        match self.caches.get(name) {
            Some(source) => Ok(source.snapshot().await),
            None => Err(error(StatusCode::NOT_FOUND, "no cache with that name")),
        }
    }

    /// Reasons each cache is down (empty when up), in name order.
    fn assess(&self, snapshots: &[(&str, Snapshot)]) -> Vec<Vec<health::DownReason>> {
        let now = Instant::now();
        let mut tracker = self.health.lock().unwrap_or_else(|e| e.into_inner());
        snapshots
            .iter()
            .map(|(name, s)| tracker.assess(name, now, json::node_facts(s)))
            .collect()
    }
}

fn error(status: StatusCode, message: &'static str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn require_token(
    State(expected): State<Arc<String>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if constant_time_eq(given, expected.as_bytes()) {
        next.run(request).await
    } else {
        let mut response = error(StatusCode::UNAUTHORIZED, "a bearer token is required");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    }
}

/// Compares without returning early at the first differing byte, so the
/// time taken does not tell how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such route")
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

async fn health(State(shared): Ctx) -> Response {
    let snapshots = shared.snapshots().await;
    let reasons = shared.assess(&snapshots);
    let caches: Vec<_> = snapshots
        .iter()
        .zip(reasons)
        .map(|((name, s), reasons)| json::CacheHealthJson {
            name,
            mode: json::mode(s),
            status: if reasons.is_empty() { "up" } else { "down" },
            reasons,
        })
        .collect();
    let up = caches.iter().all(|c| c.status == "up");
    let status = if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json::HealthJson {
        status: if up { "up" } else { "down" },
        caches,
    };
    (status, Json(body)).into_response()
}

async fn caches(State(shared): Ctx) -> Response {
    let snapshots = shared.snapshots().await;
    let list: Vec<_> = snapshots
        .iter()
        .map(|(name, s)| json::CacheSummary::new(name, s))
        .collect();
    Json(json::Caches { caches: list }).into_response()
}

async fn stats(State(shared): Ctx, Path(name): Path<String>) -> Response {
    match shared.one(&name).await {
        Ok(s) => Json(json::StatsJson::from(&s.diagnostics.stats)).into_response(),
        Err(e) => e,
    }
}

async fn diagnostics(State(shared): Ctx, Path(name): Path<String>) -> Response {
    match shared.one(&name).await {
        Ok(s) => Json(json::DiagnosticsJson::new(&name, &s)).into_response(),
        Err(e) => e,
    }
}

async fn cluster(State(shared): Ctx) -> Response {
    let snapshots = shared.snapshots().await;
    let list: Vec<_> = snapshots
        .iter()
        .map(|(name, s)| json::ClusterEntry {
            name,
            view: json::ClusterJson::new(s),
        })
        .collect();
    Json(json::Caches { caches: list }).into_response()
}

async fn metrics(State(shared): Ctx, headers: HeaderMap) -> Response {
    let snapshots = shared.snapshots().await;
    let reasons = shared.assess(&snapshots);
    let readings: Vec<_> = snapshots
        .iter()
        .zip(&reasons)
        .map(|((name, snapshot), reasons)| metrics::Reading {
            name,
            snapshot,
            up: reasons.is_empty(),
        })
        .collect();
    let text = metrics::encode(&readings);
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if metrics::wants_openmetrics(accept) {
        ([(header::CONTENT_TYPE, metrics::OPENMETRICS)], text).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, metrics::CLASSIC)],
            metrics::to_classic(&text),
        )
            .into_response()
    }
}
