//! `hydracache-node`: a grid member (or client) as a process, and a
//! development certificate tool.
//!
//! ```text
//! hydracache-node certs --cluster NAME --out DIR NODE...
//!     writes DIR/ca.pem and DIR/NODE.pem, DIR/NODE.key for each node
//! hydracache-node run --cluster NAME --node-id ID --ca CA --cert CERT --key KEY
//!                     [--bind ADDR] [--seed ADDR]... [--client] [--gossip-ms N]
//!     starts a node; prints `LISTEN <addr>`, then answers commands on stdin,
//!     one per line: `put KEY VALUE [TAG]`, `get KEY`, `invalidate-tag TAG`,
//!     `view`, `quit`
//! ```

use std::io::Write;
use std::time::Duration;

use hydracache::cluster::{DevCa, TlsConfig};
use hydracache::{CacheOptions, Grid};
use tokio::io::{AsyncBufReadExt, BufReader};

fn usage() -> ! {
    eprintln!(
        "usage:\n  hydracache-node certs --cluster NAME --out DIR NODE...\n  \
         hydracache-node run --cluster NAME --node-id ID --ca CA --cert CERT --key KEY \
         [--bind ADDR] [--seed ADDR]... [--client] [--gossip-ms N]"
    );
    std::process::exit(2)
}

struct Args(Vec<String>);

impl Args {
    fn value(&self, flag: &str) -> Option<String> {
        self.0
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.0.get(i + 1))
            .cloned()
    }
    fn values(&self, flag: &str) -> Vec<String> {
        self.0
            .windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }
    fn required(&self, flag: &str) -> String {
        self.value(flag).unwrap_or_else(|| {
            eprintln!("missing {flag}");
            usage()
        })
    }
    fn has(&self, flag: &str) -> bool {
        self.0.iter().any(|a| a == flag)
    }
    /// Words that are neither flags nor flag values.
    fn positional(&self, flags_with_values: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        let mut skip = false;
        for a in &self.0 {
            if skip {
                skip = false;
            } else if flags_with_values.contains(&a.as_str()) {
                skip = true;
            } else if !a.starts_with("--") {
                out.push(a.clone());
            }
        }
        out
    }
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_else(|| usage());
    let args = Args(argv.collect());
    match command.as_str() {
        "certs" => certs(&args),
        "run" => {
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            if let Err(e) = rt.block_on(run(&args)) {
                eprintln!("hydracache-node: {e}");
                std::process::exit(1);
            }
        }
        _ => usage(),
    }
}

fn certs(args: &Args) {
    let cluster = args.required("--cluster");
    let out = args.required("--out");
    let nodes = args.positional(&["--cluster", "--out"]);
    if nodes.is_empty() {
        usage()
    }
    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let result = DevCa::new(&cluster).and_then(|ca| ca.write_files(&out, &names));
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

async fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let tls = TlsConfig::from_pem_files(
        args.required("--ca"),
        args.required("--cert"),
        args.required("--key"),
    )?;
    let gossip = Duration::from_millis(args.value("--gossip-ms").map_or(Ok(200), |v| v.parse())?);
    let builder = if args.has("--client") {
        Grid::client()
    } else {
        Grid::member()
    };
    let grid = builder
        .cluster(args.required("--cluster"))
        .node_id(args.required("--node-id"))
        .bind(
            args.value("--bind")
                .unwrap_or_else(|| "127.0.0.1:0".into())
                .parse()?,
        )
        .seeds(args.values("--seed"))
        .tls(tls)
        .gossip_interval(gossip)
        .start()
        .await?;
    let diag = grid.cluster_diagnostics().await.expect("a cluster node");
    let mut out = std::io::stdout();
    writeln!(out, "LISTEN {}", diag.addr)?;
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
            ["quit"] => break,
            _ => "ERR unknown command".into(),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}
