//! What a grid tells operators as it runs, on small in-process grids on
//! 127.0.0.1: `tracing` spans and events (loads with the key's hash, peer
//! requests, membership and Raft leader changes, flushes on a gap), never a
//! key; the membership stream across a member joining and leaving.
//!
//! One capturing subscriber is installed for the whole test binary; each
//! test uses node ids and keys of its own and looks only at its records.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hydracache::cluster::DevCa;
use hydracache::{CacheOptions, EventError, Grid, MemberRole};
use hydracache_protocol::{Hello, Invalidate, Limits, Message, NodeIdentity, Role, Target};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

mod cluster_support;
use cluster_support::{addr, client, converge, eventually, member_builder};

/// A span or an event as the subscriber saw it, fields rendered.
#[derive(Clone, Debug)]
struct Seen {
    span: bool,
    target: String,
    name: String,
    fields: BTreeMap<String, String>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct Capture {
    next: AtomicU64,
    spans: Mutex<HashMap<u64, Seen>>,
    events: Mutex<Vec<Seen>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

struct Handle(&'static Capture);

impl Subscriber for Handle {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut seen = Seen {
            span: true,
            target: attrs.metadata().target().to_string(),
            name: attrs.metadata().name().to_string(),
            fields: BTreeMap::new(),
        };
        attrs.record(&mut Fields(&mut seen.fields));
        self.0.spans.lock().unwrap().insert(id, seen);
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(seen) = self.0.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut seen = Seen {
            span: false,
            target: event.metadata().target().to_string(),
            name: event.metadata().name().to_string(),
            fields: BTreeMap::new(),
        };
        event.record(&mut Fields(&mut seen.fields));
        self.0.events.lock().unwrap().push(seen);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// The records so far (installing the subscriber on first use).
fn records() -> Vec<Seen> {
    let capture = capture();
    let mut all: Vec<Seen> = capture.spans.lock().unwrap().values().cloned().collect();
    all.extend(capture.events.lock().unwrap().iter().cloned());
    all
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::default());
        tracing::subscriber::set_global_default(Handle(capture)).unwrap();
        capture
    })
}

/// The key hash the grid records: FNV-1a 64 finished with MurmurHash3's
/// fmix64, as docs/operations.md specifies.
fn key_hash(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    (h ^ (h >> 33)).to_string()
}

async fn member(ca: &DevCa, id: &str, seeds: &[SocketAddr]) -> Grid {
    capture();
    member_builder(ca, id, seeds)
        .ack_timeout(Duration::from_secs(2))
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_is_a_span_with_the_hashed_key_its_outcome_and_duration() {
    let grid = Grid::local().build();
    capture();
    let key = "tel-load:42";
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, std::io::Error>(7u32)
    };
    let (a, b) = tokio::join!(
        grid.get_or_load(key, CacheOptions::new(), slow),
        grid.get_or_load(key, CacheOptions::new(), slow),
    );
    assert_eq!((a.unwrap(), b.unwrap()), (7, 7));
    let failing = "tel-load:failing";
    let _ = grid
        .get_or_load::<u32, _, _, _>(failing, CacheOptions::new(), || async {
            Err(std::io::Error::other("database down"))
        })
        .await
        .unwrap_err();

    let seen = records();
    let span = |key: &str| {
        seen.iter()
            .find(|s| s.span && s.name == "load" && s.field("key_hash") == Some(&key_hash(key)))
            .cloned()
            .unwrap_or_else(|| panic!("no load span for {key}"))
    };
    let load = span(key);
    assert_eq!(load.target, "hydracache::load");
    assert_eq!(load.field("outcome"), Some("loaded"));
    let elapsed: u64 = load.field("elapsed_us").unwrap().parse().unwrap();
    assert!(elapsed > 0);
    assert_eq!(span(failing).field("outcome"), Some("loader_failed"));
    assert!(
        seen.iter().any(|s| !s.span
            && s.field("message") == Some("joined a load in flight")
            && s.field("key_hash") == Some(&key_hash(key))),
        "the second caller joined the first's load"
    );
    // The histogram counted both loads.
    assert_eq!(grid.diagnostics().load_latency.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_and_raft_leader_changes_are_events() {
    let ca = DevCa::new("orders").unwrap();
    let m0 = member(&ca, "tel-a0", &[]).await;
    let m1 = member(&ca, "tel-a1", &[addr(&m0).await]).await;
    converge(&[&m0, &m1], 2, 0).await;
    let events = |message: &str, node: &str| {
        records()
            .into_iter()
            .filter(|s| !s.span && s.field("message") == Some(message))
            .filter(|s| s.field("node").or(s.field("leader")) == Some(node))
            .collect::<Vec<_>>()
    };
    let admitted = events("node admitted", "tel-a1");
    assert!(!admitted.is_empty());
    assert_eq!(admitted[0].target, "hydracache::membership");
    assert_eq!(admitted[0].field("role"), Some("Member"));
    assert!(admitted[0].field("epoch").is_some());
    let leader = events("raft leader changed", "tel-a0");
    assert!(!leader.is_empty(), "the founder became leader");
    assert_eq!(leader[0].target, "hydracache::raft");
    drop(m1);
    drop(m0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_span_or_event_carries_a_key() {
    let ca = DevCa::new("orders").unwrap();
    let m0 = member(&ca, "tel-b0", &[]).await;
    let m1 = member(&ca, "tel-b1", &[addr(&m0).await]).await;
    let c0 = client(&ca, "tel-b-client", &[addr(&m0).await]).await;
    converge(&[&m0, &m1, &c0], 2, 1).await;
    let secret = "tel-secret:ada@example.org";
    let opts = || CacheOptions::new().tag("tel-secret-tag");
    let v: u32 = c0
        .get_or_load(secret, opts(), || async { Ok::<_, std::io::Error>(1) })
        .await
        .unwrap();
    assert_eq!(v, 1);
    m1.put(secret, 2u32, opts()).await.unwrap();
    let _ = m0.get::<u32>(secret).await.unwrap();
    let _ = c0.get::<u32>(secret).await.unwrap();
    m0.invalidate_key(secret).await.unwrap();
    let _ = m1
        .get_or_load::<u32, _, _, _>(secret, opts(), || async {
            Err(std::io::Error::other("refused"))
        })
        .await;

    let seen = records();
    let hash = key_hash(secret);
    assert!(
        seen.iter()
            .any(|s| s.target == "hydracache::peer" && s.field("key_hash") == Some(&hash)),
        "requests to the owner were traced"
    );
    assert!(seen
        .iter()
        .any(|s| s.name == "load" && s.field("key_hash") == Some(&hash)));
    for s in &seen {
        for (name, value) in &s.fields {
            assert!(
                !value.contains("tel-secret") && !name.contains("tel-secret"),
                "{s:?} carries a key"
            );
        }
    }
}

/// Speaks to a member as an origin node with a raw transport.
async fn raw_origin(ca: &DevCa, id: &str) -> hydracache::cluster::Transport {
    hydracache::cluster::Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &ca.issue(id).unwrap(),
        Hello::new("orders", (id, 1), Role::Member),
        Limits::default(),
    )
    .unwrap()
}

fn invalidate(id: &str, sequence: u64) -> Message {
    Message::Invalidate(Invalidate {
        origin: NodeIdentity::new(id, 1),
        sequence,
        epoch: 0,
        target: Target::Key(bytes::Bytes::from_static(b"tel-gap")),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_on_a_gap_is_counted_and_reported() {
    let ca = DevCa::new("orders").unwrap();
    let m = member(&ca, "tel-c0", &[]).await;
    let origin = raw_origin(&ca, "tel-c-origin").await;
    let to = addr(&m).await;
    origin
        .request(to, invalidate("tel-c-origin", 1))
        .await
        .unwrap();
    assert_eq!(m.cluster_diagnostics().await.unwrap().gap_flushes, 0);
    // Sequence 2 was lost: its hole outlives its bound.
    origin
        .request(to, invalidate("tel-c-origin", 3))
        .await
        .unwrap();
    assert!(
        eventually(async || m.cluster_diagnostics().await.unwrap().gap_flushes == 1).await,
        "the lost sequence number flushed once"
    );
    let flushed: Vec<_> = records()
        .into_iter()
        .filter(|s| s.field("origin") == Some("tel-c-origin"))
        .collect();
    assert_eq!(flushed.len(), 1, "{flushed:?}");
    assert_eq!(flushed[0].target, "hydracache::invalidation");
    assert_eq!(flushed[0].field("why"), Some("gap"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_membership_stream_reports_a_member_joining_and_leaving() {
    let ca = DevCa::new("orders").unwrap();
    let m0 = member(&ca, "tel-d0", &[]).await;
    let mut changes = m0.subscribe_membership();
    let m1 = member(&ca, "tel-d1", &[addr(&m0).await]).await;
    let generation = m1.cluster_diagnostics().await.unwrap().generation;

    // The founder may admit itself before or after the subscription: wait
    // (bounded) for the change that admits m1.
    let joined = loop {
        let change = next(&mut changes).await;
        if change.admitted.iter().any(|m| m.node_id == "tel-d1") {
            break change;
        }
    };
    let m = joined
        .admitted
        .iter()
        .find(|m| m.node_id == "tel-d1")
        .unwrap();
    assert_eq!((m.generation, m.role), (generation, MemberRole::Member));
    assert_eq!(m.address, addr(&m1).await);
    assert!(joined.removed.is_empty());
    assert_eq!(
        joined.epoch,
        m0.cluster_diagnostics()
            .await
            .unwrap()
            .epoch
            .min(joined.epoch)
    );

    m1.leave().await;
    let left = next(&mut changes).await;
    assert_eq!(left.removed.len(), 1);
    assert_eq!(left.removed[0].node_id, "tel-d1");
    assert_eq!(left.removed[0].generation, generation);
    assert!(left.epoch > joined.epoch);
    assert!(eventually(async || m0.cluster_diagnostics().await.unwrap().members.len() == 1).await);

    // Nothing more is buffered; dropping the grid closes the stream.
    assert!(changes.try_next_change().is_none());
    drop(m0);
    drop(m1);
    let closed = tokio::time::timeout(Duration::from_secs(20), changes.next_change()).await;
    assert_eq!(closed, Ok(Err(EventError::Closed)));
}

async fn next(changes: &mut hydracache::MembershipSubscription) -> hydracache::MembershipChange {
    tokio::time::timeout(Duration::from_secs(20), changes.next_change())
        .await
        .expect("a membership change within 20 s")
        .unwrap()
}
