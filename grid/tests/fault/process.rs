//! A `hydracache-node` process in a network namespace, driven over stdin,
//! and signals by pid.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_hydracache-node");

/// The gossip interval every node of the harness runs with.
pub const GOSSIP_MS: u64 = 100;
const PORT: u16 = 7000;

/// Writes a development CA and certificates for `ids` into a fresh
/// directory.
pub fn certs(ids: &[&str]) -> Result<PathBuf, String> {
    static DIRS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("hydracache-faults-{}-{n}", std::process::id()));
    let out = Command::new(BIN)
        .args(["certs", "--cluster", "faults", "--out"])
        .arg(&dir)
        .args(ids)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(dir)
}

/// How to start one node: its id, namespace, address and seeds.
#[derive(Clone)]
pub struct Spec {
    pub id: String,
    pub namespace: String,
    pub ip: String,
    pub seeds: Vec<String>,
    /// Founds the cluster (the founder's first start only).
    pub bootstrap: bool,
    pub certs: PathBuf,
}

impl Spec {
    /// The node's listen address.
    pub fn addr(ip: &str) -> String {
        format!("{ip}:{PORT}")
    }
}

/// A running node.
pub struct NodeProcess {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl NodeProcess {
    /// Starts the node and waits for its `LISTEN` line.
    pub fn start(spec: &Spec) -> Result<NodeProcess, String> {
        let dir: &Path = &spec.certs;
        let id = &spec.id;
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &spec.namespace,
            BIN,
            "run",
            "--cluster",
            "faults",
        ])
        .args(["--node-id", id, "--gossip-ms", &GOSSIP_MS.to_string()])
        .args(["--bind", &Spec::addr(&spec.ip)])
        .arg("--ca")
        .arg(dir.join("ca.pem"))
        .arg("--cert")
        .arg(dir.join(format!("{id}.pem")))
        .arg("--key")
        .arg(dir.join(format!("{id}.key")));
        if spec.bootstrap {
            cmd.arg("--bootstrap");
        }
        for s in &spec.seeds {
            cmd.args(["--seed", s]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{id}: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let node = NodeProcess {
            child,
            stdin,
            lines,
        };
        match node.lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with("LISTEN ") => Ok(node),
            other => {
                node.signal("KILL");
                Err(format!("{id} did not start: {other:?}"))
            }
        }
    }

    /// The process id (`ip netns exec` execs the node in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a command and waits up to `timeout` for its answer; `None` if
    /// the process died or did not answer in time.
    pub fn ask(&mut self, command: &str, timeout: Duration) -> Option<String> {
        writeln!(self.stdin, "{command}").ok()?;
        self.stdin.flush().ok()?;
        self.lines.recv_timeout(timeout).ok()
    }

    /// Sends `signal` (KILL, STOP, CONT) to the process by pid.
    pub fn signal(&self, signal: &str) {
        signal_pid(self.pid(), signal);
    }
}

/// Sends `signal` to `pid` with kill(1).
pub fn signal_pid(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status();
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
