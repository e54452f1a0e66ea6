//! The JSON the routes answer with: every field a grid exposes is mapped
//! here and nowhere else, so a new counter is one line in a struct below.
//! Only counts, sizes and node ids appear; never a key or a value.

use serde::Serialize;

use super::health::{DownReason, NodeFacts};
use super::source::Snapshot;
use crate::stats::{GridDiagnostics, GridStats};

/// `{"caches": [...]}`: the envelope of `/caches` and `/cluster`.
#[derive(Serialize)]
pub(crate) struct Caches<T> {
    pub(crate) caches: Vec<T>,
}

/// `GET /caches`: one line per cache.
#[derive(Serialize)]
pub(crate) struct CacheSummary<'a> {
    pub(crate) name: &'a str,
    /// `local`, `member` or `client`.
    pub(crate) mode: &'static str,
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
    pub(crate) capacity_bytes: u64,
    pub(crate) hit_ratio: Option<f64>,
}

impl<'a> CacheSummary<'a> {
    pub(crate) fn new(name: &'a str, s: &Snapshot) -> Self {
        let d = &s.diagnostics;
        CacheSummary {
            name,
            mode: mode(s),
            entries: d.entries,
            bytes: d.bytes,
            capacity_bytes: d.capacity_bytes,
            hit_ratio: d.stats.hit_ratio(),
        }
    }
}

/// `GET /caches/{name}/stats`: the counters, as [`GridStats`] has them.
#[derive(Serialize)]
pub(crate) struct StatsJson {
    pub(crate) hits: u64,
    pub(crate) near_hits: u64,
    pub(crate) misses: u64,
    pub(crate) hit_ratio: Option<f64>,
    pub(crate) loads: u64,
    pub(crate) load_errors: u64,
    pub(crate) single_flight_joins: u64,
    pub(crate) stale_loads_discarded: u64,
    pub(crate) invalidations: u64,
    pub(crate) evictions: EvictionsJson,
    pub(crate) events_published: u64,
    pub(crate) events_lagged: u64,
}

/// Entries removed by the store, by cause.
#[derive(Serialize)]
pub(crate) struct EvictionsJson {
    pub(crate) capacity: u64,
    pub(crate) expired: u64,
    pub(crate) invalidated: u64,
}

impl From<&GridStats> for StatsJson {
    fn from(s: &GridStats) -> Self {
        StatsJson {
            hits: s.hits,
            near_hits: s.near_hits,
            misses: s.misses,
            hit_ratio: s.hit_ratio(),
            loads: s.loads,
            load_errors: s.load_errors,
            single_flight_joins: s.single_flight_joins,
            stale_loads_discarded: s.stale_loads_discarded,
            invalidations: s.invalidations,
            evictions: EvictionsJson {
                capacity: s.evicted_capacity,
                expired: s.evicted_expired,
                invalidated: s.evicted_invalidated,
            },
            events_published: s.events_published,
            events_lagged: s.subscriber_lag,
        }
    }
}

/// `GET /caches/{name}/diagnostics`: the counters plus the store's gauges.
#[derive(Serialize)]
pub(crate) struct DiagnosticsJson {
    pub(crate) name: String,
    pub(crate) mode: &'static str,
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
    pub(crate) capacity_bytes: u64,
    pub(crate) tags: u64,
    pub(crate) loads_in_flight: usize,
    pub(crate) subscribers: usize,
    pub(crate) codec: &'static str,
    pub(crate) stats: StatsJson,
}

impl DiagnosticsJson {
    pub(crate) fn new(name: &str, s: &Snapshot) -> Self {
        let d: &GridDiagnostics = &s.diagnostics;
        DiagnosticsJson {
            name: name.to_string(),
            mode: mode(s),
            entries: d.entries,
            bytes: d.bytes,
            capacity_bytes: d.capacity_bytes,
            tags: d.tags,
            loads_in_flight: d.loads_in_flight,
            subscribers: d.subscribers,
            codec: d.codec,
            stats: StatsJson::from(&d.stats),
        }
    }
}

/// `GET /health`.
#[derive(Serialize)]
pub(crate) struct HealthJson<'a> {
    /// `up` when every cache is up.
    pub(crate) status: &'static str,
    pub(crate) caches: Vec<CacheHealthJson<'a>>,
}

/// One cache's health.
#[derive(Serialize)]
pub(crate) struct CacheHealthJson<'a> {
    pub(crate) name: &'a str,
    pub(crate) mode: &'static str,
    pub(crate) status: &'static str,
    pub(crate) reasons: Vec<DownReason>,
}

/// `GET /cluster`: per cache, its node's view of the cluster.
#[derive(Serialize)]
pub(crate) struct ClusterEntry<'a> {
    pub(crate) name: &'a str,
    #[serde(flatten)]
    pub(crate) view: ClusterJson,
}

/// A local grid, or a node's view of its cluster.
#[derive(Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub(crate) enum ClusterJson {
    /// A single-process grid: no cluster.
    Local,
    /// A member: owns keys, votes in Raft.
    #[cfg(feature = "cluster")]
    Member(node::NodeJson),
    /// A client: a near cache that owns nothing.
    #[cfg(feature = "cluster")]
    Client(node::NodeJson),
}

impl ClusterJson {
    pub(crate) fn new(s: &Snapshot) -> Self {
        #[cfg(feature = "cluster")]
        if let Some(c) = &s.cluster {
            let node = node::NodeJson::from(c);
            return match c.role {
                hydracache_protocol::Role::Member => ClusterJson::Member(node),
                hydracache_protocol::Role::Client => ClusterJson::Client(node),
            };
        }
        let _ = s;
        ClusterJson::Local
    }
}

/// `local`, `member` or `client`.
pub(crate) fn mode(s: &Snapshot) -> &'static str {
    #[cfg(feature = "cluster")]
    if let Some(c) = &s.cluster {
        return match c.role {
            hydracache_protocol::Role::Member => "member",
            hydracache_protocol::Role::Client => "client",
        };
    }
    let _ = s;
    "local"
}

/// What the health rule needs, read from the cluster view; `None` for a
/// local grid.
pub(crate) fn node_facts(s: &Snapshot) -> Option<NodeFacts> {
    #[cfg(feature = "cluster")]
    if let Some(c) = &s.cluster {
        let me = &c.node_id;
        return Some(NodeFacts {
            member: c.role == hydracache_protocol::Role::Member,
            admitted: c.epoch > 0 && (c.members.contains(me) || c.clients.contains(me)),
            has_leader: c.raft_leader.is_some(),
            raft_task_exited: c.raft_task_exited,
        });
    }
    let _ = s;
    None
}

#[cfg(feature = "cluster")]
pub(crate) mod node {
    //! The cluster view of one node.

    use serde::Serialize;

    use crate::cluster::ClusterDiagnostics;
    use hydracache_protocol::Role;

    /// One node's view of its cluster.
    #[derive(Serialize)]
    pub(crate) struct NodeJson {
        pub(crate) node_id: String,
        pub(crate) generation: u64,
        pub(crate) addr: String,
        /// The membership epoch (0 before the first admission).
        pub(crate) epoch: u64,
        pub(crate) raft: RaftJson,
        /// Admitted members, with liveness as gossip sees it.
        pub(crate) members: Vec<PeerJson>,
        /// Admitted clients, with liveness as gossip sees it.
        pub(crate) clients: Vec<PeerJson>,
        /// Nodes gossip reports live, this one included.
        pub(crate) gossip_live: usize,
        /// Nodes gossip has declared dead.
        pub(crate) dead: Vec<String>,
        pub(crate) invalidations: InvalidationsJson,
        pub(crate) read_path: ReadPathJson,
    }

    /// Raft as this node knows it.
    #[derive(Serialize)]
    pub(crate) struct RaftJson {
        pub(crate) leader: Option<String>,
        pub(crate) term: u64,
        /// `leader`, `follower`, `leaderless` (a member that knows no
        /// leader) or `observer` (a client, not a Raft peer).
        pub(crate) role: &'static str,
        /// The member's Raft task has exited (always false on clients).
        pub(crate) task_exited: bool,
    }

    /// An admitted node.
    #[derive(Serialize)]
    pub(crate) struct PeerJson {
        pub(crate) id: String,
        pub(crate) generation: u64,
        pub(crate) addr: String,
        /// `member` or `client`.
        pub(crate) role: &'static str,
        /// Not declared dead by gossip.
        pub(crate) live: bool,
        /// Milliseconds since its gossip heartbeat last moved (0 for this
        /// node; `null` until gossip has heard from it).
        pub(crate) last_heard_ms: Option<u64>,
        pub(crate) raft_leader: bool,
        pub(crate) this_node: bool,
    }

    /// The invalidation exchange, as this node took part in it.
    #[derive(Serialize)]
    pub(crate) struct InvalidationsJson {
        /// The last sequence number this node sent (one per invalidation).
        pub(crate) sent: u64,
        /// Acknowledgements received, one per peer and invalidation.
        pub(crate) acknowledged: u64,
        /// Peers that did not acknowledge in time, one per invalidation.
        pub(crate) late_nodes: u64,
        /// Flushes of everything after a gap in a peer's invalidations.
        pub(crate) flushes_on_gap: u64,
    }

    /// Reads and puts that went to a key's owner.
    #[derive(Serialize)]
    pub(crate) struct ReadPathJson {
        pub(crate) remote_hits: u64,
        pub(crate) remote_misses: u64,
        pub(crate) wrong_owner_retries: u64,
        pub(crate) local_fallbacks: u64,
        pub(crate) puts_served: u64,
        pub(crate) owner_loads: u64,
        pub(crate) leases: LeasesJson,
    }

    /// The owner's lease table: cluster-wide single flight.
    #[derive(Serialize)]
    pub(crate) struct LeasesJson {
        pub(crate) granted: u64,
        pub(crate) joined: u64,
        pub(crate) expired: u64,
        pub(crate) voided: u64,
        pub(crate) fills_refused: u64,
    }

    fn role_name(role: Role) -> &'static str {
        match role {
            Role::Member => "member",
            Role::Client => "client",
        }
    }

    impl From<&ClusterDiagnostics> for NodeJson {
        fn from(c: &ClusterDiagnostics) -> Self {
            let leader = c.raft_leader.as_deref();
            let peers = |role: Role| {
                c.peers
                    .iter()
                    .filter(|p| p.role == role)
                    .map(|p| PeerJson {
                        id: p.node_id.clone(),
                        generation: p.generation,
                        addr: p.address.to_string(),
                        role: role_name(p.role),
                        live: p.live,
                        last_heard_ms: p
                            .last_heard
                            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                        raft_leader: leader == Some(p.node_id.as_str()),
                        this_node: p.node_id == c.node_id && p.generation == c.generation,
                    })
                    .collect()
            };
            let role = match (c.role, leader) {
                (Role::Client, _) => "observer",
                (_, None) => "leaderless",
                (_, Some(l)) if l == c.node_id => "leader",
                _ => "follower",
            };
            NodeJson {
                node_id: c.node_id.clone(),
                generation: c.generation,
                addr: c.addr.to_string(),
                epoch: c.epoch,
                raft: RaftJson {
                    leader: c.raft_leader.clone(),
                    term: c.raft_term,
                    role,
                    task_exited: c.raft_task_exited,
                },
                members: peers(Role::Member),
                clients: peers(Role::Client),
                gossip_live: c.gossip_live,
                dead: c.dead.clone(),
                invalidations: InvalidationsJson {
                    sent: c.invalidation_sequence,
                    acknowledged: c.invalidation_acks,
                    late_nodes: c.invalidation_late_nodes,
                    flushes_on_gap: c.gap_flushes,
                },
                read_path: ReadPathJson {
                    remote_hits: c.remote_hits,
                    remote_misses: c.remote_misses,
                    wrong_owner_retries: c.wrong_owner_retries,
                    local_fallbacks: c.local_fallbacks,
                    puts_served: c.puts_served,
                    owner_loads: c.owner_loads,
                    leases: LeasesJson {
                        granted: c.leases_granted,
                        joined: c.leases_joined,
                        expired: c.leases_expired,
                        voided: c.leases_voided,
                        fills_refused: c.fills_refused,
                    },
                },
            }
        }
    }
}
