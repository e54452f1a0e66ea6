//! `hydracache-node`: a grid member (or client) as a process, and a
//! development certificate tool. `hydracache-node --help` and
//! `hydracache-node <command> --help` list every flag; each flag can also
//! be given as the `HYDRACACHE_*` environment variable shown there.
//!
//! ```text
//! hydracache-node certs --cluster NAME --out DIR NODE...
//!     writes DIR/ca.pem and DIR/NODE.pem, DIR/NODE.key for each node
//! hydracache-node run --cluster NAME --node-id ID --ca CA --cert CERT --key KEY
//!                     [--bind ADDR] [--seed ADDR]... [--bootstrap] [--client] [--gossip-ms N]
//!                     [--http ADDR [--http-token TOKEN]]
//!     starts a node; prints `LISTEN <addr>` (and `HTTP <url>` with --http),
//!     then answers commands on stdin, one per line: `put KEY VALUE [TAG]`,
//!     `get KEY`, `load KEY VALUE [TAG]` (answers `VALUE V`, with ` loaded`
//!     when its loader ran here), `load-many CALLS KEYS DELAY_MS` (below),
//!     `invalidate-key KEY`, `invalidate-tag TAG`, `view`, `status`, `quit`
//!
//! `load-many CALLS KEYS DELAY_MS` starts CALLS concurrent `get_or_load`
//! calls spread over the keys `many:0` .. `many:{KEYS-1}`, each with a
//! loader that waits DELAY_MS and returns this node's id, and answers
//! `LOADED N VALUES many:0=ID,many:1=ID,...`: N is how many loaders ran in
//! this process, and each key's value names the node whose loader ran for it
//! (`ERR ...` if a call failed or two calls of one key saw different values).
//! Run on every process of a grid, the N add up to the loads in the grid.
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use hydracache::cluster::{DevCa, TlsConfig};
use hydracache::{CacheOptions, Grid};
use hydracache_protocol::Role;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A HydraCache grid node as a process.
#[derive(Parser)]
#[command(name = "hydracache-node", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a development CA and a certificate and key for each node.
    Certs(CertsArgs),
    /// Starts a member (or, with --client, a client) and answers commands
    /// on stdin: put KEY VALUE [TAG], get KEY, load KEY VALUE [TAG],
    /// load-many CALLS KEYS DELAY_MS, invalidate-key KEY, invalidate-tag
    /// TAG, view, status, quit.
    Run(RunArgs),
}

#[derive(Args)]
struct CertsArgs {
    /// The cluster name the certificates are issued for.
    #[arg(long, env = "HYDRACACHE_CLUSTER")]
    cluster: String,
    /// The directory to write ca.pem, NODE.pem and NODE.key into.
    #[arg(long, env = "HYDRACACHE_CERTS_OUT")]
    out: PathBuf,
    /// The member node ids to issue certificates for (a member
    /// certificate grants the member and the client role).
    #[arg(required_unless_present = "clients")]
    nodes: Vec<String>,
    /// A client node id to issue a client-only certificate for: it cannot
    /// join as a member. Repeat the flag for several.
    #[arg(long = "client")]
    clients: Vec<String>,
}

#[derive(Args)]
struct RunArgs {
    /// The cluster name (every node of a cluster uses the same one).
    #[arg(long, env = "HYDRACACHE_CLUSTER")]
    cluster: String,
    /// This node's id (the subject of its certificate).
    #[arg(long, env = "HYDRACACHE_NODE_ID")]
    node_id: String,
    /// The cluster's CA certificate (PEM).
    #[arg(long, env = "HYDRACACHE_CA")]
    ca: PathBuf,
    /// This node's certificate (PEM).
    #[arg(long, env = "HYDRACACHE_CERT")]
    cert: PathBuf,
    /// This node's private key (PEM).
    #[arg(long, env = "HYDRACACHE_KEY")]
    key: PathBuf,
    /// The UDP address to listen on (port 0 picks one).
    #[arg(long, env = "HYDRACACHE_BIND", default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// A node to join through; repeat the flag, or separate with commas in
    /// the environment variable. A member without seeds (and without
    /// --bootstrap) waits until a member that names it as a seed finds it.
    #[arg(long = "seed", env = "HYDRACACHE_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
    /// Found a new cluster: give it to exactly one member, on the cluster's
    /// first start only. Every other start, this member's restarts
    /// included, joins the running cluster.
    #[arg(long, env = "HYDRACACHE_BOOTSTRAP", conflicts_with = "client")]
    bootstrap: bool,
    /// Join as a client (a near cache that owns nothing) instead of a member.
    #[arg(long, env = "HYDRACACHE_CLIENT")]
    client: bool,
    /// The gossip interval in milliseconds.
    #[arg(long, env = "HYDRACACHE_GOSSIP_MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..))]
    gossip_ms: u64,
    /// Serve the read-only actuator (health, stats, cluster, metrics,
    /// dashboard) over HTTP on this TCP address. Keep it on loopback unless
    /// --http-token is set.
    #[cfg(feature = "actuator")]
    #[arg(long, env = "HYDRACACHE_HTTP")]
    http: Option<SocketAddr>,
    /// Require `Authorization: Bearer TOKEN` on every actuator route.
    #[cfg(feature = "actuator")]
    #[arg(long, env = "HYDRACACHE_HTTP_TOKEN", requires = "http")]
    http_token: Option<String>,
}

fn main() {
    // Spans and events to stderr (stdout carries the command protocol):
    // HYDRACACHE_LOG takes tracing's filter syntax, e.g. `hydracache=debug`;
    // warnings and errors by default.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HYDRACACHE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Cli::parse().command {
        Command::Certs(args) => certs(args),
        Command::Run(args) => {
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            if let Err(e) = rt.block_on(run(args)) {
                eprintln!("hydracache-node: {e}");
                std::process::exit(1);
            }
        }
    }
}

fn certs(args: CertsArgs) {
    let nodes: Vec<(&str, Role)> = args
        .nodes
        .iter()
        .map(|n| (n.as_str(), Role::Member))
        .chain(args.clients.iter().map(|n| (n.as_str(), Role::Client)))
        .collect();
    let names: Vec<&str> = nodes.iter().map(|(n, _)| *n).collect();
    let result = DevCa::new(&args.cluster).and_then(|ca| ca.write_files_as(&args.out, &nodes));
    let out = args.out.display();
    match result {
        Ok(()) => println!(
            "wrote {out}/ca.pem and certificates for {}",
            names.join(", ")
        ),
        Err(e) => {
            eprintln!("hydracache-node certs: {e}");
            std::process::exit(1);
        }
    }
}

/// Starts the node. A node the membership removes (declared dead while
/// paused or cut off) starts a new generation of itself on the same
/// address, inside the library (`NodeBuilder::rejoin_after_removal`, on by
/// default): the process keeps one grid for its whole life.
async fn start(args: &RunArgs) -> Result<Grid, Box<dyn std::error::Error>> {
    let tls = TlsConfig::from_pem_files(&args.ca, &args.cert, &args.key)?;
    let builder = if args.client {
        Grid::client()
    } else {
        Grid::member()
    };
    Ok(builder
        .cluster(args.cluster.clone())
        .node_id(args.node_id.clone())
        .bind(args.bind)
        .seeds(args.seeds.clone())
        .bootstrap(args.bootstrap)
        .tls(tls)
        .gossip_interval(Duration::from_millis(args.gossip_ms))
        .start()
        .await?)
}

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let grid = start(&args).await?;
    let diag = grid.cluster_diagnostics().await.expect("a cluster node");
    let mut out = std::io::stdout();
    writeln!(out, "LISTEN {}", diag.addr)?;
    #[cfg(feature = "actuator")]
    if let Some(addr) = args.http {
        let mut actuator = hydracache::actuator::Actuator::new().cache("grid", grid.clone());
        if let Some(token) = args.http_token.clone() {
            actuator = actuator.bearer_token(token);
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("--http {addr}: {e}"))?;
        writeln!(out, "HTTP http://{}/", listener.local_addr()?)?;
        let router = actuator.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                eprintln!("hydracache-node: actuator: {e}");
            }
        });
    }
    out.flush()?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["put", key, value] => grid
                .put(key, value.to_string(), CacheOptions::new())
                .await
                .map_or_else(|e| format!("ERR {e}"), |_| "OK".into()),
            ["put", key, value, tag] => grid
                .put(key, value.to_string(), CacheOptions::new().tag(*tag))
                .await
                .map_or_else(|e| format!("ERR {e}"), |_| "OK".into()),
            ["get", key] => match grid.get::<String>(key).await {
                Ok(Some(v)) => format!("VALUE {v}"),
                Ok(None) => "NONE".into(),
                Err(e) => format!("ERR {e}"),
            },
            ["load", key, value, tag @ ..] if tag.len() <= 1 => {
                let value = value.to_string();
                let options = tag.iter().fold(CacheOptions::new(), |o, t| o.tag(*t));
                // Set when the loader runs here (in a grid, the closure is
                // called on every node to build the loader's future, but only
                // the lease holder's future runs).
                let loaded = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let ran = loaded.clone();
                let result = grid
                    .get_or_load(key, options, move || async move {
                        ran.store(true, std::sync::atomic::Ordering::SeqCst);
                        Ok::<_, std::io::Error>(value)
                    })
                    .await;
                let loaded = loaded.load(std::sync::atomic::Ordering::SeqCst);
                let note = if loaded { " loaded" } else { "" };
                result.map_or_else(
                    |e| format!("ERR {e}"),
                    |v: String| format!("VALUE {v}{note}"),
                )
            }
            ["load-many", calls, keys, delay_ms] => {
                match (calls.parse(), keys.parse(), delay_ms.parse()) {
                    (Ok(calls), Ok(keys), Ok(delay)) if keys > 0 => {
                        load_many(&grid, &args.node_id, calls, keys, delay).await
                    }
                    _ => "ERR load-many CALLS KEYS DELAY_MS: numbers, KEYS > 0".into(),
                }
            }
            ["invalidate-key", key] => grid
                .invalidate_key(key)
                .await
                .map_or_else(|e| format!("ERR {e}"), |_| "OK".into()),
            ["invalidate-tag", tag] => grid
                .invalidate_tag(tag)
                .await
                .map_or_else(|e| format!("ERR {e}"), |_| "OK".into()),
            ["view"] => {
                let d = grid.cluster_diagnostics().await.expect("a cluster node");
                format!(
                    "VIEW members={} clients={} dead={}",
                    d.members.join(","),
                    d.clients.join(","),
                    d.dead.join(",")
                )
            }
            ["status"] => {
                let d = grid.cluster_diagnostics().await.expect("a cluster node");
                format!(
                    "STATUS epoch={} leader={} term={} generation={}",
                    d.epoch,
                    d.raft_leader.unwrap_or_default(),
                    d.raft_term,
                    d.generation
                )
            }
            ["quit"] => break,
            _ => "ERR unknown command".into(),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}

/// `load-many`: `calls` concurrent loads over `keys` keys; see the module
/// docs for the answer.
async fn load_many(grid: &Grid, node_id: &str, calls: usize, keys: usize, delay_ms: u64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let runs = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..calls)
        .map(|i| {
            let (grid, runs, me) = (grid.clone(), runs.clone(), node_id.to_string());
            let key = format!("many:{}", i % keys);
            tokio::spawn(async move {
                let value = grid
                    .get_or_load(&key, CacheOptions::new(), move || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                        Ok::<_, std::io::Error>(me)
                    })
                    .await;
                (key, value)
            })
        })
        .collect();
    let mut values = std::collections::BTreeMap::new();
    for task in tasks {
        let (key, value) = match task.await {
            Ok(done) => done,
            Err(e) => return format!("ERR a call panicked: {e}"),
        };
        let value: String = match value {
            Ok(v) => v,
            Err(e) => return format!("ERR {key}: {e}"),
        };
        if let Some(seen) = values.insert(key.clone(), value.clone()) {
            if seen != value {
                return format!("ERR {key}: {seen} and {value}");
            }
        }
    }
    let values: Vec<String> = (0..keys.min(calls))
        .map(|i| {
            let key = format!("many:{i}");
            format!("{key}={}", values[&key])
        })
        .collect();
    format!(
        "LOADED {} VALUES {}",
        runs.load(Ordering::SeqCst),
        values.join(",")
    )
}
