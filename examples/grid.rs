//! A grid on loopback: three members and one client with development
//! certificates. Every node asks for one key at once with `get_or_load`: the
//! loader runs once in the grid and every node gets its value. One member
//! puts a value; it lands at the key's owner and every node reads it
//! through the owner (keeping a near copy); the client
//! invalidates its tag and the call returns once every node applied it.
//! Prints cluster diagnostics and serves member-1's and the client's
//! actuator on loopback while it runs (`-- --hold` keeps it serving until
//! Ctrl-C).
//!
//! Run with `cargo run --example grid`.

use std::time::Duration;

use hydracache::actuator::Actuator;
use hydracache::cluster::DevCa;
use hydracache::{CacheOptions, Grid};
use hydracache_examples::serve_on_loopback;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ca = DevCa::new("orders")?;
    let gossip = Duration::from_millis(100);
    let start_member = |id: &'static str, seeds: Vec<String>| {
        let tls = ca.issue(id);
        async move {
            Grid::member()
                .cluster("orders")
                .node_id(id)
                .bootstrap(seeds.is_empty())
                .seeds(seeds)
                .tls(tls?)
                .gossip_interval(gossip)
                .start()
                .await
                .map_err(Box::<dyn std::error::Error>::from)
        }
    };
    let m1 = start_member("member-1", vec![]).await?;
    let seed = m1
        .cluster_diagnostics()
        .await
        .expect("a member")
        .addr
        .to_string();
    let m2 = start_member("member-2", vec![seed.clone()]).await?;
    let m3 = start_member("member-3", vec![seed.clone()]).await?;
    let client = Grid::client()
        .cluster("orders")
        .node_id("web-client")
        .seeds([seed])
        .tls(ca.issue("web-client")?)
        .gossip_interval(gossip)
        .near_cache_capacity_bytes(16 << 20)
        .connect()
        .await?;
    let nodes = [
        ("member-1", &m1),
        ("member-2", &m2),
        ("member-3", &m3),
        ("web-client", &client),
    ];

    let actuator = Actuator::new()
        .cache("member-1", m1.clone())
        .cache("web-client", client.clone())
        .router();
    println!("actuator: {}", serve_on_loopback(actuator).await?);

    print!("waiting for gossip to agree");
    for _ in 0..100 {
        let d = client.cluster_diagnostics().await.expect("a node");
        if d.members.len() == 3 && d.clients.len() == 1 {
            break;
        }
        print!(".");
        tokio::time::sleep(gossip).await;
    }
    println!();

    // Every node misses the same key at once: the key's owner grants one
    // node the lease to load it and answers the others from that load.
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let loads: Vec<_> = nodes
        .iter()
        .map(|(name, grid)| {
            let (name, grid, runs) = (*name, (*grid).clone(), runs.clone());
            tokio::spawn(async move {
                let report: Result<String, _> = grid
                    .get_or_load("report:7", CacheOptions::new(), move || async move {
                        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await; // a slow query
                        Ok::<_, std::io::Error>(format!("loaded by {name}"))
                    })
                    .await;
                (name, report)
            })
        })
        .collect();
    for load in loads {
        let (name, report) = load.await?;
        println!("  {name} get_or_load report:7 = {:?}", report?);
    }
    println!(
        "report:7 loaded {} time(s) in the whole grid",
        runs.load(std::sync::atomic::Ordering::SeqCst)
    );

    // One node writes; the value lands at its owner, and every other node
    // reads it through the owner and keeps a near copy.
    m2.put(
        "user:42",
        "Ada".to_string(),
        CacheOptions::new().tags(["users", "user:42"]),
    )
    .await?;
    println!(
        "member-2 put user:42 (owner: {})",
        client.owner_for_key("user:42").unwrap_or_default()
    );
    for (name, grid) in &nodes {
        let user: Option<String> = grid.get("user:42").await?;
        println!("  {name} reads user:42 = {user:?}");
    }

    let started = std::time::Instant::now();
    client.invalidate_tag("user:42").await?;
    println!(
        "client invalidated tag user:42, acknowledged by every node in {:?}",
        started.elapsed()
    );
    for (name, grid) in &nodes {
        println!(
            "  {name}: user:42 cached = {}",
            grid.contains_key("user:42").await
        );
    }

    for (name, grid) in &nodes {
        let d = grid.cluster_diagnostics().await.expect("a node");
        println!(
            "{name}: role={:?} generation={} addr={} members={:?} clients={:?} dead={:?} sent={} remote_hits={} puts_served={}",
            d.role, d.generation, d.addr, d.members, d.clients, d.dead, d.invalidation_sequence, d.remote_hits, d.puts_served
        );
    }
    if std::env::args().any(|a| a == "--hold") {
        println!("the actuator keeps serving until Ctrl-C");
        std::future::pending::<()>().await;
    }
    Ok(())
}
