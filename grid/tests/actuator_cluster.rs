//! The actuator over a small in-process grid: the cluster view, health of
//! members and clients, and metrics with cluster series.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use hydracache::actuator::Actuator;
use hydracache::cluster::DevCa;
use hydracache::{CacheOptions, Grid};
use serde_json::Value;
use tower::ServiceExt;

mod cluster_support;
use cluster_support::{client, member_builder, GOSSIP};

async fn member(ca: &DevCa, id: &str, seeds: &[SocketAddr]) -> Grid {
    member_builder(ca, id, seeds)
        .ack_timeout(Duration::from_millis(500))
        .start()
        .await
        .unwrap()
}

/// Polls until every node sees the membership and a raft leader, and keeps
/// copies (bounded: 800 gossip rounds).
async fn converge(nodes: &[&Grid], members: usize, clients: usize) {
    for _ in 0..800 {
        let mut ok = true;
        for n in nodes {
            let d = n.cluster_diagnostics().await.unwrap();
            ok &= d.members.len() == members
                && d.clients.len() == clients
                && d.raft_leader.is_some()
                && d.keeps_copies;
        }
        if ok {
            return;
        }
        tokio::time::sleep(GOSSIP).await;
    }
    panic!("no agreement on {members} members and {clients} clients");
}

async fn get(router: &Router, path: &str) -> (StatusCode, String) {
    let response = router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn get_json(router: &Router, path: &str) -> (StatusCode, Value) {
    let (status, body) = get(router, path).await;
    (status, serde_json::from_str(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_view_health_and_metrics_of_members_and_a_client() {
    let ca = DevCa::new("orders").unwrap();
    let m0 = member(&ca, "m0", &[]).await;
    let seed = m0.cluster_diagnostics().await.unwrap().addr;
    let m1 = member(&ca, "m1", &[seed]).await;
    let c0 = client(&ca, "c0", &[seed]).await;
    converge(&[&m0, &m1, &c0], 2, 1).await;

    for i in 0..4u32 {
        m0.put(&format!("k{i}"), i, CacheOptions::new().tag("t"))
            .await
            .unwrap();
    }
    let _ = m0.get::<u32>("k1").await.unwrap();
    let _ = m0.get::<u32>("absent").await.unwrap();
    c0.invalidate_tag("t").await.unwrap();
    // The client keeps a near copy of the member's value, then hits it.
    m0.put("hot", 7u32, CacheOptions::new()).await.unwrap();
    for _ in 0..2 {
        assert_eq!(c0.get::<u32>("hot").await.unwrap(), Some(7));
    }
    assert_eq!(c0.stats().near_hits, 1);

    let router = Actuator::new()
        .cache("grid", m0.clone())
        .cache("near", c0.clone())
        .cache("local", Grid::local().build())
        .router();

    let (status, health) = get_json(&router, "/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    let modes: Vec<_> = health["caches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].clone(), c["mode"].clone()))
        .collect();
    assert_eq!(
        modes,
        [
            ("grid".into(), "member".into()),
            ("local".into(), "local".into()),
            ("near".into(), "client".into())
        ]
    );

    // A load of a key m0 owns goes through m0's own lease table.
    let owned = (0..)
        .map(|i| format!("lease:{i}"))
        .find(|k| m0.owner_for_key(k).as_deref() == Some("m0"))
        .unwrap();
    m0.get_or_load(&owned, CacheOptions::new(), || async {
        Ok::<_, std::io::Error>(5u64)
    })
    .await
    .unwrap();

    let (status, cluster) = get_json(&router, "/cluster").await;
    assert_eq!(status, StatusCode::OK);
    let grid = &cluster["caches"][0];
    let d = m0.cluster_diagnostics().await.unwrap();
    assert_eq!(grid["name"], "grid");
    assert_eq!(grid["mode"], "member");
    assert_eq!(grid["node_id"], "m0");
    assert_eq!(grid["generation"], d.generation);
    assert_eq!(grid["addr"], d.addr.to_string());
    assert_eq!(grid["epoch"], d.epoch);
    assert_eq!(grid["raft"]["term"], d.raft_term);
    let leader = d.raft_leader.clone().unwrap();
    assert_eq!(grid["raft"]["leader"], leader.as_str());
    assert_eq!(
        grid["raft"]["role"],
        if leader == "m0" { "leader" } else { "follower" }
    );
    let members = grid["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    for m in members {
        assert_eq!(m["live"], true);
        assert_eq!(m["raft_leader"], m["id"] == leader.as_str());
        assert_eq!(m["this_node"], m["id"] == "m0");
        assert_eq!(m["role"], "member");
        // Each peer as cluster_diagnostics() has it.
        let p = d
            .peers
            .iter()
            .find(|p| m["id"] == p.node_id.as_str())
            .unwrap();
        assert_eq!(m["generation"], p.generation);
        assert_eq!(m["addr"], p.address.to_string());
        let heard = m["last_heard_ms"]
            .as_u64()
            .expect("gossip heard every member");
        if m["this_node"] == true {
            assert_eq!(heard, 0);
        }
    }
    let m1_generation = m1.cluster_diagnostics().await.unwrap().generation;
    assert!(members
        .iter()
        .any(|m| m["id"] == "m1" && m["generation"] == m1_generation));
    assert_eq!(grid["clients"][0]["id"], "c0");
    assert_eq!(grid["clients"][0]["role"], "client");
    assert_eq!(grid["raft"]["task_exited"], false);
    // The invalidation and read-path counters, as cluster_diagnostics() has them.
    let d = m0.cluster_diagnostics().await.unwrap();
    let inv = &grid["invalidations"];
    assert_eq!(inv["sent"], d.invalidation_sequence);
    assert_eq!(inv["acknowledged"], d.invalidation_acks);
    assert_eq!(inv["late_nodes"], d.invalidation_late_nodes);
    assert_eq!(inv["flushes_on_gap"], d.gap_flushes);
    assert_eq!(d.invalidation_late_nodes, 0);
    assert!(d.invalidation_acks >= 1, "m0's puts were acknowledged");
    assert_eq!(d.invalidation_ack_latency.count(), d.invalidation_acks);
    let read = &grid["read_path"];
    assert_eq!(read["remote_hits"], d.remote_hits);
    assert_eq!(read["remote_misses"], d.remote_misses);
    assert_eq!(read["wrong_owner_retries"], d.wrong_owner_retries);
    assert_eq!(read["local_fallbacks"], d.local_fallbacks);
    assert_eq!(read["puts_served"], d.puts_served);
    assert_eq!(read["owner_loads"], d.owner_loads);
    let leases = &read["leases"];
    assert!(d.leases_granted >= 1, "m0 granted its own load a lease");
    assert_eq!(leases["granted"], d.leases_granted);
    assert_eq!(leases["joined"], d.leases_joined);
    assert_eq!(leases["expired"], d.leases_expired);
    assert_eq!(leases["voided"], d.leases_voided);
    assert_eq!(leases["fills_refused"], d.fills_refused);
    assert_eq!(cluster["caches"][1]["mode"], "local");
    let near = &cluster["caches"][2];
    assert_eq!(near["mode"], "client");
    assert_eq!(near["raft"]["role"], "observer");
    assert_eq!(
        near["invalidations"]["sent"],
        c0.cluster_diagnostics()
            .await
            .unwrap()
            .invalidation_sequence
    );
    assert!(near["invalidations"]["sent"].as_u64().unwrap() >= 1);

    let (_, stats) = get_json(&router, "/caches/grid/stats").await;
    let s = m0.stats();
    assert_eq!(
        (stats["hits"].as_u64(), stats["misses"].as_u64()),
        (Some(s.hits), Some(s.misses))
    );
    assert_eq!(stats["invalidations"], s.invalidations);
    assert_eq!(stats["near_hits"], s.near_hits);
    let (_, diag) = get_json(&router, "/caches/near/diagnostics").await;
    assert_eq!(diag["mode"], "client");
    assert_eq!(diag["capacity_bytes"], 8 << 20);

    let (status, text) = get(&router, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        format!("hydracache_cluster_epoch{{cache=\"grid\"}} {}", d.epoch),
        "hydracache_cluster_members{cache=\"grid\"} 2".to_string(),
        "hydracache_cluster_clients{cache=\"near\"} 1".to_string(),
        "hydracache_raft_leader_known{cache=\"grid\"} 1".to_string(),
        "hydracache_up{cache=\"near\"} 1".to_string(),
        format!("hydracache_hits_total{{cache=\"grid\"}} {}", s.hits),
        "hydracache_near_hits_total{cache=\"near\"} 1".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    // Latency histograms, labelled by cache (and kind), never by key.
    let count = |series: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(
        count("hydracache_peer_request_duration_seconds_count{cache=\"grid\",kind=\"fetch\"}"),
        d.fetch_latency.count()
    );
    assert_eq!(
        count("hydracache_peer_request_duration_seconds_count{cache=\"grid\",kind=\"put\"}"),
        d.put_latency.count()
    );
    assert_eq!(
        count("hydracache_invalidation_ack_duration_seconds_count{cache=\"grid\"}"),
        d.invalidation_ack_latency.count()
    );
    assert_eq!(
        count("hydracache_cluster_invalidation_acks_total{cache=\"grid\"}"),
        d.invalidation_acks
    );
    assert_eq!(count("hydracache_raft_task_exited{cache=\"grid\"}"), 0);
    promtool_check(&text);
    // No cluster series for a local grid.
    assert!(!text
        .lines()
        .any(|l| l.starts_with("hydracache_cluster_epoch{cache=\"local\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_was_never_admitted_is_down_with_its_reasons() {
    let ca = DevCa::new("orders").unwrap();
    // Its only seed is a socket nobody answers on: it never joins.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let lonely = member(&ca, "lonely", &[silent.local_addr().unwrap()]).await;
    let router = Actuator::new()
        .cache("grid", lonely)
        .leaderless_grace(Duration::ZERO)
        .router();
    let (status, health) = get_json(&router, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health["status"], "down");
    assert_eq!(
        health["caches"][0]["reasons"],
        serde_json::json!([{ "reason": "not_admitted" }])
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, health) = get_json(&router, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let reasons = health["caches"][0]["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 2, "{health}");
    assert_eq!(reasons[1]["reason"], "no_raft_leader");
    assert!(reasons[1]["for_ms"].as_u64().unwrap() >= 20);
    let (_, text) = get(&router, "/metrics").await;
    assert!(
        text.lines().any(|l| l == "hydracache_up{cache=\"grid\"} 0"),
        "{text}"
    );
    let (_, cluster) = get_json(&router, "/cluster").await;
    assert_eq!(cluster["caches"][0]["raft"]["role"], "leaderless");
    assert_eq!(cluster["caches"][0]["epoch"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_left_is_down() {
    let ca = DevCa::new("orders").unwrap();
    let m0 = member(&ca, "m0", &[]).await;
    let seed = m0.cluster_diagnostics().await.unwrap().addr;
    let m1 = member(&ca, "m1", &[seed]).await;
    converge(&[&m0, &m1], 2, 0).await;
    let router = Actuator::new().cache("grid", m1.clone()).router();
    let (status, _) = get_json(&router, "/health").await;
    assert_eq!(status, StatusCode::OK);
    m1.leave().await;
    let (status, health) = get_json(&router, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["caches"][0]["reasons"][0]["reason"], "not_admitted");
}

/// `promtool check metrics` on a scrape; under `CI=true` a missing promtool
/// fails the test, locally it skips with a reason.
fn promtool_check(text: &str) {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    let Some(promtool) = found else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("promtool is required under CI=true (Debian package: prometheus)");
        }
        eprintln!("skipping promtool: not installed (Debian package: prometheus)");
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(feature = "test-hooks")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_raft_task_stopped_is_down_with_the_reason() {
    let ca = DevCa::new("orders").unwrap();
    let m0 = member(&ca, "m0", &[]).await;
    converge(&[&m0], 1, 0).await;
    let router = Actuator::new().cache("grid", m0.clone()).router();
    let (status, _) = get_json(&router, "/health").await;
    assert_eq!(status, StatusCode::OK);
    m0.put("k", "v".to_string(), CacheOptions::new())
        .await
        .unwrap();

    m0.stop_raft_task();
    let exited = async {
        for _ in 0..200 {
            if m0.cluster_diagnostics().await.unwrap().raft_task_exited {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    };
    assert!(exited.await, "the raft task is reported exited");
    // It fails loudly: it left the cluster and flushed what it can no
    // longer keep fresh.
    assert_eq!(m0.get::<String>("k").await.unwrap(), None);
    let (status, health) = get_json(&router, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(
        health["caches"][0]["reasons"],
        serde_json::json!([{ "reason": "raft_task_exited" }])
    );
    let (_, cluster) = get_json(&router, "/cluster").await;
    assert_eq!(cluster["caches"][0]["raft"]["task_exited"], true);
    let (_, text) = get(&router, "/metrics").await;
    assert!(
        text.lines()
            .any(|l| l == "hydracache_raft_task_exited{cache=\"grid\"} 1"),
        "{text}"
    );
}
