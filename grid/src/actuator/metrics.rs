//! `GET /metrics`: the grids' counters and gauges through prometheus-client.
//!
//! Each scrape reads every grid once and registers the readings in a fresh
//! [`Registry`]: the grids own their counters (monotonic for the life of the
//! process), so the exposition only copies them. Every series is labelled by
//! cache name, never by key.
//!
//! prometheus-client writes OpenMetrics text, which Prometheus asks for and
//! gets unchanged. A client that does not ask for it (curl, `promtool check
//! metrics`, older scrapers) gets the classic text format of the same
//! samples: the one difference is that the classic format names a counter's
//! family with its `_total` suffix in `# HELP` and `# TYPE`.
//!
//! Latencies are histograms in seconds. The grid records them in its own
//! lock-free buckets ([`crate::latency`]); a [`Collector`] hands each
//! reading to prometheus-client's histogram encoder.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::source::Snapshot;
use crate::latency::LatencySnapshot;
use crate::stats::GridStats;

/// The OpenMetrics content type prometheus-client's text encoder writes.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text format.
pub(crate) const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabel {
    cache: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EvictionLabel {
    cache: String,
    cause: &'static str,
}

/// One histogram family: a reading per label set, encoded at scrape time.
#[derive(Debug)]
struct Histograms<L> {
    name: &'static str,
    help: &'static str,
    series: Vec<(L, LatencySnapshot)>,
}

impl<L: EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static> Collector for Histograms<L> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            self.name,
            self.help,
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, h) in &self.series {
            let buckets: Vec<(f64, u64)> = h.per_bucket().collect();
            family
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(h.sum().as_secs_f64(), h.count(), &buckets, None)?;
        }
        Ok(())
    }
}

#[cfg(feature = "cluster")]
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    cache: String,
    kind: &'static str,
}

/// One cache's reading and whether it is up.
pub(crate) struct Reading<'a> {
    pub(crate) name: &'a str,
    pub(crate) snapshot: &'a Snapshot,
    pub(crate) up: bool,
}

type StatsGet = fn(&GridStats) -> u64;
type ReadingGet = fn(&Reading<'_>) -> u64;

/// Counters per cache: name (prometheus-client appends `_total`), help, value.
const COUNTERS: [(&str, &str, StatsGet); 10] = [
    ("hits", "Reads that found a value", |s| s.hits),
    (
        "near_hits",
        "Reads that found a near copy of a key another node owns (counted in hits too)",
        |s| s.near_hits,
    ),
    ("misses", "Reads that found nothing", |s| s.misses),
    ("loads", "Loader runs, one per single-flight group", |s| {
        s.loads
    }),
    ("load_errors", "Loader runs that failed or panicked", |s| {
        s.load_errors
    }),
    (
        "single_flight_joins",
        "Callers that joined a load already in flight",
        |s| s.single_flight_joins,
    ),
    (
        "stale_loads_discarded",
        "Loads not cached because an invalidation raced them",
        |s| s.stale_loads_discarded,
    ),
    (
        "invalidations",
        "Invalidation calls on this node (key, tag, remove, flush)",
        |s| s.invalidations,
    ),
    (
        "events_published",
        "Cache events delivered to subscribers",
        |s| s.events_published,
    ),
    (
        "events_lagged",
        "Cache events dropped for subscribers that fell behind",
        |s| s.subscriber_lag,
    ),
];

/// Gauges per cache: name, help, unit (appended to the name), value.
const GAUGES: [(&str, &str, Option<Unit>, ReadingGet); 7] = [
    (
        "up",
        "1 when the cache's health is up, 0 when down",
        None,
        |r| u64::from(r.up),
    ),
    ("entries", "Resident entries", None, |r| {
        r.snapshot.diagnostics.entries
    }),
    (
        "stored",
        "Bytes charged against the capacity",
        Some(Unit::Bytes),
        |r| r.snapshot.diagnostics.bytes,
    ),
    ("capacity", "The capacity", Some(Unit::Bytes), |r| {
        r.snapshot.diagnostics.capacity_bytes
    }),
    ("tags", "Distinct tags in use", None, |r| {
        r.snapshot.diagnostics.tags
    }),
    ("loads_in_flight", "Loads running now", None, |r| {
        r.snapshot.diagnostics.loads_in_flight as u64
    }),
    ("subscribers", "Event subscribers", None, |r| {
        r.snapshot.diagnostics.subscribers as u64
    }),
];

fn label(cache: &str) -> CacheLabel {
    CacheLabel {
        cache: cache.to_string(),
    }
}

/// Registers a gauge family; `unit` is appended to the name.
fn gauge(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
) -> Family<CacheLabel, Gauge> {
    let family = Family::<CacheLabel, Gauge>::default();
    match unit {
        Some(u) => registry.register_with_unit(name, help, u, family.clone()),
        None => registry.register(name, help, family.clone()),
    }
    family
}

fn set(family: &Family<CacheLabel, Gauge>, cache: &str, v: u64) {
    family
        .get_or_create(&label(cache))
        .set(i64::try_from(v).unwrap_or(i64::MAX));
}

/// Registers a counter family with one value per cache.
fn counter<'a>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (&'a str, u64)>,
) {
    let family = Family::<CacheLabel, Counter>::default();
    registry.register(name, help, family.clone());
    for (cache, v) in values {
        family.get_or_create(&label(cache)).inc_by(v);
    }
}

/// Encodes the readings as OpenMetrics text.
pub(crate) fn encode(readings: &[Reading<'_>]) -> String {
    let mut registry = Registry::with_prefix("hydracache");
    for (name, help, get) in COUNTERS {
        let values = readings
            .iter()
            .map(|r| (r.name, get(&r.snapshot.diagnostics.stats)));
        counter(&mut registry, name, help, values);
    }
    let evictions = Family::<EvictionLabel, Counter>::default();
    registry.register(
        "evictions",
        "Entries the store removed, by cause (capacity, expired, invalidated)",
        evictions.clone(),
    );
    for r in readings {
        let s = &r.snapshot.diagnostics.stats;
        for (cause, v) in [
            ("capacity", s.evicted_capacity),
            ("expired", s.evicted_expired),
            ("invalidated", s.evicted_invalidated),
        ] {
            evictions
                .get_or_create(&EvictionLabel {
                    cache: r.name.to_string(),
                    cause,
                })
                .inc_by(v);
        }
    }
    for (name, help, unit, get) in GAUGES {
        let family = gauge(&mut registry, name, help, unit);
        for r in readings {
            set(&family, r.name, get(r));
        }
    }
    registry.register_collector(Box::new(Histograms {
        name: "load_duration",
        help: "Loads, from the loader's start (or the request to the key's owner) to the outcome",
        series: readings
            .iter()
            .map(|r| (label(r.name), r.snapshot.diagnostics.load_latency))
            .collect(),
    }));
    #[cfg(feature = "cluster")]
    cluster(&mut registry, readings);

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

/// Cluster series, for the caches that are cluster nodes.
#[cfg(feature = "cluster")]
fn cluster(registry: &mut Registry, readings: &[Reading<'_>]) {
    let nodes: Vec<_> = readings
        .iter()
        .filter_map(|r| r.snapshot.cluster.as_ref().map(|c| (r.name, c)))
        .collect();
    type Get = fn(&crate::cluster::ClusterDiagnostics) -> u64;
    let counters: [(&str, &str, Get); 15] = [
        (
            "cluster_invalidations_sent",
            "Invalidations this node originated and fanned out",
            |c| c.invalidation_sequence,
        ),
        (
            "cluster_invalidation_acks",
            "Acknowledgements received for this node's invalidations, one per peer",
            |c| c.invalidation_acks,
        ),
        (
            "cluster_invalidation_late_nodes",
            "Peers that did not acknowledge one of this node's invalidations in time",
            |c| c.invalidation_late_nodes,
        ),
        (
            "cluster_gap_flushes",
            "Flushes of everything after a gap in a peer's invalidations",
            |c| c.gap_flushes,
        ),
        (
            "cluster_remote_hits",
            "Local misses the key's owner answered with a value",
            |c| c.remote_hits,
        ),
        (
            "cluster_remote_misses",
            "Local misses the key's owner did not have either",
            |c| c.remote_misses,
        ),
        (
            "cluster_wrong_owner_retries",
            "Requests answered wrong-owner and retried with a newer membership",
            |c| c.wrong_owner_retries,
        ),
        (
            "cluster_local_fallbacks",
            "Requests that reached no owner within their deadline",
            |c| c.local_fallbacks,
        ),
        (
            "cluster_puts_served",
            "Puts from other nodes stored here as the owner",
            |c| c.puts_served,
        ),
        (
            "cluster_owner_loads",
            "Named loader runs on this node",
            |c| c.owner_loads,
        ),
        (
            "cluster_leases_granted",
            "Load leases this node granted as a key's owner",
            |c| c.leases_granted,
        ),
        (
            "cluster_leases_joined",
            "Load requests this owner held on a lease in progress instead of loading again",
            |c| c.leases_joined,
        ),
        (
            "cluster_leases_expired",
            "Leases whose holder stayed silent past the lease timeout",
            |c| c.leases_expired,
        ),
        (
            "cluster_leases_voided",
            "Leases an invalidation or a write voided while their load ran",
            |c| c.leases_voided,
        ),
        (
            "cluster_fills_refused",
            "Fills this owner refused: voided, expired, forged or from another epoch",
            |c| c.fills_refused,
        ),
    ];
    for (metric, help, get) in counters {
        counter(
            registry,
            metric,
            help,
            nodes.iter().map(|(name, c)| (*name, get(c))),
        );
    }
    registry.register_collector(Box::new(Histograms {
        name: "peer_request_duration",
        help: "Requests to a key's owner, per attempt, by kind (fetch, put)",
        series: nodes
            .iter()
            .flat_map(|(name, c)| {
                [("fetch", c.fetch_latency), ("put", c.put_latency)].map(|(kind, h)| {
                    let labels = KindLabel {
                        cache: name.to_string(),
                        kind,
                    };
                    (labels, h)
                })
            })
            .collect(),
    }));
    registry.register_collector(Box::new(Histograms {
        name: "invalidation_ack_duration",
        help: "From sending an invalidation to a peer to its acknowledgement",
        series: nodes
            .iter()
            .map(|(name, c)| (label(name), c.invalidation_ack_latency))
            .collect(),
    }));
    let gauges: [(&str, &str, Get); 8] = [
        (
            "cluster_epoch",
            "The membership epoch this node knows",
            |c| c.epoch,
        ),
        (
            "cluster_members",
            "Members Raft admitted at that epoch",
            |c| c.members.len() as u64,
        ),
        (
            "cluster_clients",
            "Clients Raft admitted at that epoch",
            |c| c.clients.len() as u64,
        ),
        (
            "cluster_gossip_live_nodes",
            "Nodes gossip reports live, this one included",
            |c| c.gossip_live as u64,
        ),
        (
            "cluster_dead_nodes",
            "Nodes gossip has declared dead",
            |c| c.dead.len() as u64,
        ),
        ("raft_term", "The Raft term (0 on clients)", |c| c.raft_term),
        (
            "raft_leader_known",
            "1 when this node knows a Raft leader",
            |c| u64::from(c.raft_leader.is_some()),
        ),
        (
            "raft_task_exited",
            "1 when this member's Raft task has exited (restart the process)",
            |c| u64::from(c.raft_task_exited),
        ),
    ];
    for (metric, help, get) in gauges {
        let family = gauge(registry, metric, help, None);
        for (name, c) in &nodes {
            set(&family, name, get(c));
        }
    }
}

/// The classic Prometheus text format of an OpenMetrics exposition from
/// prometheus-client: counter families are named with `_total` in `# HELP`
/// and `# TYPE`, `# UNIT` lines and the `# EOF` marker are dropped (the
/// classic format has neither). Samples are unchanged.
pub(crate) fn to_classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Whether a scraper's `Accept` header asks for OpenMetrics.
pub(crate) fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counter_families_with_total() {
        let om = "# HELP x_hits Reads.\n# TYPE x_hits counter\nx_hits_total{cache=\"a\"} 3\n\
                  # HELP x_stored_bytes Bytes.\n# TYPE x_stored_bytes gauge\n# UNIT x_stored_bytes bytes\n\
                  x_stored_bytes{cache=\"a\"} 7\n# EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP x_hits_total Reads.\n# TYPE x_hits_total counter\nx_hits_total{cache=\"a\"} 3\n\
             # HELP x_stored_bytes Bytes.\n# TYPE x_stored_bytes gauge\nx_stored_bytes{cache=\"a\"} 7\n"
        );
    }

    #[test]
    fn only_an_openmetrics_accept_header_gets_openmetrics() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
