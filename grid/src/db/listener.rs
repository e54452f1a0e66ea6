//! `PgInvalidationListener`: database-driven invalidation over Postgres
//! LISTEN/NOTIFY.
//!
//! A background task LISTENs on a channel and turns each NOTIFY payload
//! ([`NotifyPayload`]) into invalidations. Notifications sent while the
//! connection is down are lost for good (Postgres does not queue them for
//! a listener that is gone), so when the task finds its connection dropped
//! it runs a *recovery* invalidation — the tags it is configured to cover,
//! or a flush — once at once and once more after LISTEN is re-established
//! on a new connection. Between the two, loads may cache rows written
//! during the outage; the second recovery drops them, and from then on
//! every notification is seen again.
//!
//! The task reconnects by itself, with exponential backoff. It does not
//! rely on sqlx's own silent reconnection: it must know that a reconnect
//! happened, so it owns each connection (one pool of one connection per
//! attempt) and builds a new `PgListener` after any receive error.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Executor, Postgres};
use tokio::sync::watch;

use crate::codec::{Codec, Rkyv};
use crate::db::cache::DbCache;
use crate::db::payload::NotifyPayload;
use crate::error::CacheError;

/// The channel a listener uses unless told otherwise.
pub const DEFAULT_CHANNEL: &str = "hydracache_invalidation";

/// The `hydracache_notify()` trigger function (PL/pgSQL): install it once per
/// database, then attach it to tables with [`notify_trigger_sql`].
pub const NOTIFY_FUNCTION_SQL: &str = include_str!("notify_trigger.sql");

/// What a listener invalidates when notifications may have been missed
/// (a dropped connection, a payload it could not read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Flush the whole grid. The default: always safe, whatever the
    /// notifications cover.
    Flush,
    /// Invalidate these tags: the entity and collection tags that the
    /// notifications on this channel can name (e.g. `["users"]` when every
    /// user entry also carries the collection tag).
    Tags(Vec<String>),
}

/// Invalidates cache entries when Postgres says rows changed: LISTEN on a
/// channel, one invalidation per NOTIFY, recovery after a dropped
/// connection. See the [module docs](self) and docs/database.md for the
/// payload format and the trigger that sends it.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use hydracache::db::{DbCache, PgInvalidationListener};
///
/// let db = DbCache::new(hydracache::Grid::local().build(), "app");
/// let listener = PgInvalidationListener::from_url(db.clone(), "postgres://app@127.0.0.1/app")?
///     .channel("hydracache_invalidation")
///     .covers_tags(["users", "orders"])
///     .start()
///     .await?;
/// // ... serve; keep `listener` alive (dropping it stops listening).
/// assert!(listener.status().connected);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PgInvalidationListener<C: Codec = Rkyv> {
    cache: DbCache<C>,
    options: PgConnectOptions,
    channel: String,
    recovery: Recovery,
    backoff_min: Duration,
    backoff_max: Duration,
}

impl<C: Codec> PgInvalidationListener<C> {
    /// A listener for `cache`, connecting with `options`. Nothing happens
    /// until [`start`](Self::start).
    pub fn new(cache: DbCache<C>, options: PgConnectOptions) -> Self {
        PgInvalidationListener {
            cache,
            options,
            channel: DEFAULT_CHANNEL.to_string(),
            recovery: Recovery::Flush,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
        }
    }

    /// [`new`](Self::new) with a `postgres://` URL.
    pub fn from_url(cache: DbCache<C>, url: &str) -> Result<Self, sqlx::Error> {
        Ok(Self::new(cache, PgConnectOptions::from_str(url)?))
    }

    /// The channel to LISTEN on (default [`DEFAULT_CHANNEL`]).
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// Recover by invalidating these tags instead of flushing the grid.
    pub fn covers_tags<S: Into<String>>(self, tags: impl IntoIterator<Item = S>) -> Self {
        self.recovery(Recovery::Tags(tags.into_iter().map(Into::into).collect()))
    }

    /// What to invalidate when notifications may have been missed.
    pub fn recovery(mut self, recovery: Recovery) -> Self {
        self.recovery = recovery;
        self
    }

    /// Delay before the second reconnect attempt, doubling up to `max`
    /// (the first attempt is immediate). Default 50 ms to 5 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// Connects, LISTENs, and leaves a task receiving notifications. The
    /// first connection's error (bad address, credentials, channel) is
    /// returned; later ones are retried with backoff and reported in
    /// [`PgListenerHandle::status`]. Must be called within a Tokio runtime.
    /// Entries cached before `start` are not checked: start the listener
    /// before caching.
    pub async fn start(self) -> Result<PgListenerHandle, sqlx::Error> {
        let (listener, pid) = connect(&self.options, &self.channel).await?;
        let (tx, rx) = watch::channel(ListenerStatus {
            connected: true,
            backend_pid: Some(pid),
            connections: 1,
            ..ListenerStatus::default()
        });
        let task = tokio::spawn(run(self, listener, tx));
        Ok(PgListenerHandle { status: rx, task })
    }
}

/// What a listener has seen: a snapshot from [`PgListenerHandle::status`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStatus {
    /// LISTEN is in place on a live connection.
    pub connected: bool,
    /// The server process of the current connection (`pg_backend_pid()`).
    pub backend_pid: Option<i32>,
    /// Connections established and LISTENing, the first included.
    pub connections: u64,
    /// Connections found dropped.
    pub disconnects: u64,
    /// Recovery invalidations run (two per dropped connection, one per unreadable payload).
    pub recoveries: u64,
    /// Notifications received.
    pub notifications: u64,
    /// Notifications whose payload was not a [`NotifyPayload`].
    pub invalid_payloads: u64,
    /// Invalidations that failed (only possible in a grid, when the fan-out fails).
    pub invalidation_errors: u64,
    /// The last error: a dropped connection, a failed reconnect, a bad payload.
    pub last_error: Option<String>,
}

/// The running listener ([`PgInvalidationListener::start`]). Dropping it
/// (or [`stop`](Self::stop)) stops listening.
#[derive(Debug)]
pub struct PgListenerHandle {
    status: watch::Receiver<ListenerStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl PgListenerHandle {
    /// What the listener has seen so far.
    pub fn status(&self) -> ListenerStatus {
        self.status.borrow().clone()
    }

    /// Waits until the status satisfies `ready` and returns it.
    pub async fn wait_for(
        &mut self,
        mut ready: impl FnMut(&ListenerStatus) -> bool,
    ) -> ListenerStatus {
        if let Ok(s) = self.status.wait_for(|s| ready(s)).await {
            return s.clone();
        }
        // The task is gone (the runtime is shutting down): report the last state.
        self.status.borrow().clone()
    }

    /// Stops listening.
    pub fn stop(self) {
        drop(self)
    }
}

impl Drop for PgListenerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection of its own (a pool of one, so that the listener's
/// connection is never shared), LISTENing on `channel`, and its backend pid.
async fn connect(
    options: &PgConnectOptions,
    channel: &str,
) -> Result<(PgListener, i32), sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    // A lost connection ends `try_recv` with `Ok(None)` and is rebuilt by
    // `run`, which then knows to recover.
    listener.eager_reconnect(false);
    listener.listen(channel).await?;
    let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut listener)
        .await?;
    Ok((listener, pid))
}

async fn run<C: Codec>(
    cfg: PgInvalidationListener<C>,
    first: PgListener,
    status: watch::Sender<ListenerStatus>,
) {
    let mut listener = Some(first);
    loop {
        let Some(l) = listener.as_mut() else {
            listener = Some(reconnect(&cfg, &status).await);
            recover(&cfg, &status).await;
            continue;
        };
        match l.try_recv().await {
            Ok(Some(n)) => {
                status.send_modify(|s| s.notifications += 1);
                match NotifyPayload::parse(n.payload()) {
                    Ok(p) => {
                        if let Err(e) = cfg.cache.invalidate(&p.invalidations()).await {
                            invalidation_failed(&status, e);
                        }
                    }
                    Err(e) => {
                        status.send_modify(|s| {
                            s.invalid_payloads += 1;
                            s.last_error = Some(e.to_string());
                        });
                        recover(&cfg, &status).await;
                    }
                }
            }
            lost => {
                let error = match lost {
                    Err(e) => format!("connection lost: {e}"),
                    _ => "connection lost".to_string(),
                };
                // Whatever failed, this connection is done with: a new one
                // is built, so that we know LISTEN is in place again.
                drop(listener.take());
                status.send_modify(|s| {
                    s.connected = false;
                    s.backend_pid = None;
                    s.disconnects += 1;
                    s.last_error = Some(error);
                });
                recover(&cfg, &status).await;
            }
        }
    }
}

/// Connects again, retrying with exponential backoff until it succeeds.
async fn reconnect<C: Codec>(
    cfg: &PgInvalidationListener<C>,
    status: &watch::Sender<ListenerStatus>,
) -> PgListener {
    let mut delay = Duration::ZERO;
    loop {
        tokio::time::sleep(delay).await;
        match connect(&cfg.options, &cfg.channel).await {
            Ok((listener, pid)) => {
                status.send_modify(|s| {
                    s.connected = true;
                    s.backend_pid = Some(pid);
                    s.connections += 1;
                });
                return listener;
            }
            Err(e) => {
                status.send_modify(|s| s.last_error = Some(format!("reconnect failed: {e}")));
                delay = (delay * 2).clamp(cfg.backoff_min, cfg.backoff_max);
            }
        }
    }
}

/// Invalidates what notifications we may have missed could have named.
async fn recover<C: Codec>(
    cfg: &PgInvalidationListener<C>,
    status: &watch::Sender<ListenerStatus>,
) {
    let result = match &cfg.recovery {
        Recovery::Flush => cfg.cache.grid().flush().await,
        Recovery::Tags(tags) => cfg.cache.invalidate_tags(tags).await,
    };
    if let Err(e) = result {
        invalidation_failed(status, e);
    }
    status.send_modify(|s| s.recoveries += 1);
}

fn invalidation_failed(status: &watch::Sender<ListenerStatus>, e: CacheError) {
    status.send_modify(|s| {
        s.invalidation_errors += 1;
        s.last_error = Some(format!("invalidation failed: {e}"));
    });
}

/// Sends `payload` on `channel` with `pg_notify`. Inside a transaction it is
/// delivered when the transaction commits, and not at all if it rolls back.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), sqlx::Error> {
/// use hydracache::db::{notify, NotifyPayload, DEFAULT_CHANNEL};
/// let mut tx = pool.begin().await?;
/// sqlx::query("update users set name = 'Ada' where id = 42").execute(&mut *tx).await?;
/// notify(&mut *tx, DEFAULT_CHANNEL, &NotifyPayload::new().tag("user:42")).await?;
/// tx.commit().await?; // every listener invalidates user:42 now
/// # Ok(()) }
/// ```
pub async fn notify<'e, E>(
    executor: E,
    channel: &str,
    payload: &NotifyPayload,
) -> Result<(), sqlx::Error>
where
    E: Executor<'e, Database = Postgres>,
{
    sqlx::query("select pg_notify($1, $2)")
        .bind(channel)
        .bind(payload.to_json())
        .execute(executor)
        .await
        .map(drop)
}

/// The SQL that attaches [`NOTIFY_FUNCTION_SQL`]'s `hydracache_notify()` to
/// `table` (optionally schema-qualified): a row trigger for INSERT, UPDATE
/// and DELETE and a statement trigger for TRUNCATE, replacing earlier ones.
/// Run it with `sqlx::raw_sql` (it holds several statements) or psql.
///
/// ```
/// let sql = hydracache::db::notify_trigger_sql("users", "hydracache_invalidation", "user", "id", "users");
/// assert!(sql.contains(r#"AFTER INSERT OR UPDATE OR DELETE ON "users""#));
/// assert!(sql.contains("hydracache_notify('hydracache_invalidation', 'user', 'id', 'users')"));
/// ```
pub fn notify_trigger_sql(
    table: &str,
    channel: &str,
    entity: &str,
    id_column: &str,
    collection: &str,
) -> String {
    let base = table.rsplit('.').next().unwrap_or(table);
    let row_trigger = quote_ident(&format!("{base}_hydracache_notify"));
    let truncate_trigger = quote_ident(&format!("{base}_hydracache_notify_truncate"));
    let table = table
        .split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".");
    let args = [channel, entity, id_column, collection]
        .map(quote_literal)
        .join(", ");
    format!(
        "DROP TRIGGER IF EXISTS {row_trigger} ON {table};\n\
         CREATE TRIGGER {row_trigger} AFTER INSERT OR UPDATE OR DELETE ON {table}\n    \
         FOR EACH ROW EXECUTE FUNCTION hydracache_notify({args});\n\
         DROP TRIGGER IF EXISTS {truncate_trigger} ON {table};\n\
         CREATE TRIGGER {truncate_trigger} AFTER TRUNCATE ON {table}\n    \
         FOR EACH STATEMENT EXECUTE FUNCTION hydracache_notify({args});\n"
    )
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{notify, PgInvalidationListener};
    use crate::db::{DbCache, NotifyPayload};
    use crate::test_remote::grid_with_failing_fan_out;

    /// DATABASE_URL, or `None` outside CI (under CI a missing server fails).
    fn database_url() -> Option<String> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("DATABASE_URL is not set, and under CI the Postgres tests must run")
            }
            _ => {
                eprintln!("skipping: DATABASE_URL is not set");
                None
            }
        }
    }

    #[tokio::test]
    async fn an_invalidation_that_fails_is_counted_and_reported() {
        let Some(url) = database_url() else { return };
        let db = DbCache::new(grid_with_failing_fan_out(), "app");
        let channel = format!("hydracache_unit_{}", std::process::id());
        let mut handle = PgInvalidationListener::from_url(db, &url)
            .unwrap()
            .channel(channel.clone())
            .start()
            .await
            .unwrap();
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        notify(&pool, &channel, &NotifyPayload::new().tag("t"))
            .await
            .unwrap();
        let status = tokio::time::timeout(
            Duration::from_secs(30),
            handle.wait_for(|s| s.invalidation_errors == 1),
        )
        .await
        .expect("the failure is reported");
        assert!(status
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("invalidation failed")));
        assert!(status.connected, "the listener keeps listening");
    }
}
