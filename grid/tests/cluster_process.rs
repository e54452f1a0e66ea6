//! Three node processes form a cluster; one is killed with SIGKILL; the
//! survivors see it dead and keep invalidating each other.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_hydracache-node");

struct NodeProcess {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    addr: String,
}

impl NodeProcess {
    fn start(dir: &Path, id: &str, seeds: &[&str]) -> NodeProcess {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "run",
            "--cluster",
            "orders",
            "--node-id",
            id,
            "--gossip-ms",
            "50",
        ])
        .arg("--ca")
        .arg(dir.join("ca.pem"))
        .arg("--cert")
        .arg(dir.join(format!("{id}.pem")))
        .arg("--key")
        .arg(dir.join(format!("{id}.key")));
        if seeds.is_empty() {
            cmd.arg("--bootstrap");
        }
        for s in seeds {
            cmd.args(["--seed", s]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the node starts");
        let addr = first
            .strip_prefix("LISTEN ")
            .expect("LISTEN line")
            .to_string();
        NodeProcess {
            child,
            stdin,
            lines,
            addr,
        }
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("an answer")
    }

    /// Asks `view` until `pred` holds (bounded: 400 x 50 ms).
    fn wait_view(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        for _ in 0..400 {
            last = self.ask("view");
            if pred(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("view never matched: {last}");
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn three_processes_form_a_cluster_and_survive_a_sigkill() {
    let dir = std::env::temp_dir().join(format!("hydracache-process-{}", std::process::id()));
    let [mut n1, mut n2, mut n3] = three_processes(&dir);

    // An invalidation crosses process boundaries before the call returns.
    for n in [&mut n1, &mut n2, &mut n3] {
        assert_eq!(n.ask("put user:1 ada users"), "OK");
    }
    assert_eq!(n3.ask("invalidate-tag users"), "OK");
    assert_eq!(n1.ask("get user:1"), "NONE");
    assert_eq!(n2.ask("get user:1"), "NONE");

    // A load says whether its loader ran; keys and tags invalidate remotely.
    assert_eq!(n1.ask("load order:1 a orders"), "VALUE a loaded");
    assert_eq!(n1.ask("load order:1 b orders"), "VALUE a");
    assert_eq!(n2.ask("invalidate-key order:1"), "OK");
    assert_eq!(n1.ask("load order:1 c"), "VALUE c loaded");
    assert_eq!(n3.ask("invalidate-tag orders"), "OK");
    assert_eq!(n1.ask("get order:1"), "VALUE c");
    assert_eq!(n1.ask("load order:2 d orders extra"), "ERR unknown command");
    let status = n1.ask("status");
    assert!(status.starts_with("STATUS epoch="), "{status}");
    assert!(status.contains(" leader=n"), "{status}");

    // SIGKILL n3: the survivors' failure detectors declare it dead.
    n3.child.kill().unwrap();
    n3.child.wait().unwrap();
    for n in [&mut n1, &mut n2] {
        let view = n.wait_view(|v| v.starts_with("VIEW members=n1,n2 ") && v.contains("dead=n3"));
        assert!(view.contains("clients= "), "{view}");
    }
    // And they still invalidate each other, acknowledged, once n3 has gone
    // unheard long enough to have dropped its cache by its own rule (until
    // then an invalidation names it).
    let mut answer = String::new();
    for _ in 0..100 {
        answer = n1.ask("put k v t");
        if answer == "OK" {
            break;
        }
        assert!(answer.contains("\"n3\""), "{answer}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(answer, "OK");
    assert_eq!(n2.ask("put k v t"), "OK");
    assert_eq!(n2.ask("invalidate-tag t"), "OK");
    assert_eq!(n1.ask("get k"), "NONE");
    let _ = std::fs::remove_dir_all(dir);
}

/// Starts three node processes of cluster "orders" with certificates in
/// `dir`, and waits until each sees all three members.
fn three_processes(dir: &Path) -> [NodeProcess; 3] {
    let out = Command::new(BIN)
        .args(["certs", "--cluster", "orders", "--out"])
        .arg(dir)
        .args(["n1", "n2", "n3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n1 = NodeProcess::start(dir, "n1", &[]);
    let seed = n1.addr.clone();
    let n2 = NodeProcess::start(dir, "n2", &[&seed]);
    let n3 = NodeProcess::start(dir, "n3", &[&seed]);
    let mut nodes = [n1, n2, n3];
    for n in &mut nodes {
        n.wait_view(|v| v.starts_with("VIEW members=n1,n2,n3 "));
    }
    nodes
}

#[test]
fn loads_driven_on_three_processes_run_once_per_key_in_the_grid() {
    const KEYS: usize = 20;
    let dir = std::env::temp_dir().join(format!("hydracache-loads-{}", std::process::id()));
    let mut nodes = three_processes(&dir);
    // The same keys loaded on all three at once: 300 calls each over 20
    // keys, with a 50 ms loader.
    for n in &mut nodes {
        writeln!(n.stdin, "load-many 300 {KEYS} 50").unwrap();
        n.stdin.flush().unwrap();
    }
    let answers: Vec<String> = nodes
        .iter()
        .map(|n| {
            n.lines
                .recv_timeout(Duration::from_secs(60))
                .expect("an answer")
        })
        .collect();
    let mut loads = 0;
    let mut values = None;
    for (answer, id) in answers.iter().zip(["n1", "n2", "n3"]) {
        let rest = answer
            .strip_prefix("LOADED ")
            .unwrap_or_else(|| panic!("{answer}"));
        let (n, seen) = rest.split_once(" VALUES ").unwrap();
        let n: usize = n.parse().unwrap();
        // A node ran the loader for exactly the keys whose value names it.
        assert_eq!(n, seen.matches(&format!("={id}")).count(), "{id}: {answer}");
        loads += n;
        // Every process got the same value for every key.
        match &values {
            None => values = Some(seen.to_string()),
            Some(first) => assert_eq!(first, seen),
        }
    }
    assert_eq!(loads, KEYS, "one load per key in the grid: {answers:?}");
    // Read again everywhere: no more loads.
    for n in &mut nodes {
        let again = n.ask(&format!("load-many 40 {KEYS} 50"));
        assert!(again.starts_with("LOADED 0 VALUES "), "{again}");
    }
    assert_eq!(
        nodes[0].ask("load-many x 1 1").split(' ').next(),
        Some("ERR")
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_arguments_and_bad_certificates_are_reported() {
    let out = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
    let out = Command::new(BIN)
        .args([
            "run",
            "--cluster",
            "x",
            "--node-id",
            "n",
            "--ca",
            "/nonexistent/ca.pem",
        ])
        .args([
            "--cert",
            "/nonexistent/c.pem",
            "--key",
            "/nonexistent/k.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read"),
        "{:?}",
        out
    );
}
