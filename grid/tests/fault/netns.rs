//! A private network for a test run: one network namespace per node, joined
//! by a bridge that lives in a namespace of its own, so nothing is added to
//! the host's namespace. Names are unique per run; dropping the guard
//! deletes every namespace (and with them the veths and the bridge), also
//! on panic.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static RUNS: AtomicUsize = AtomicUsize::new(0);

/// Namespaces `{prefix}n1..`, a switch namespace `{prefix}sw` holding the
/// bridge `br0` and one veth `v{i}` per node, whose peer is `eth0` in the
/// node's namespace with address `10.77.0.{i}/24`.
pub struct Network {
    prefix: String,
    nodes: usize,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Network {
    /// Creates the namespaces, the bridge and the links, all up.
    pub fn new(nodes: usize) -> Result<Network, String> {
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let mut net = Network {
            prefix: format!("hcf{}x{run}", std::process::id()),
            nodes: 0,
        };
        let sw = net.switch();
        ip(&["netns", "add", &sw])?;
        ip(&[
            "-n",
            &sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for i in 1..=nodes {
            let ns = net.namespace(i);
            ip(&["netns", "add", &ns])?;
            net.nodes = i;
            let veth = format!("v{i}");
            ip(&[
                "-n", &sw, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &sw, "link", "set", &veth, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", Network::addr(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn switch(&self) -> String {
        format!("{}sw", self.prefix)
    }

    /// Node `i`'s namespace (1-based).
    pub fn namespace(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    /// Node `i`'s address (1-based).
    pub fn addr(i: usize) -> String {
        format!("10.77.0.{i}")
    }

    /// Cuts node `i`'s link on the bridge side.
    pub fn cut(&self, i: usize) -> Result<(), String> {
        ip(&[
            "-n",
            &self.switch(),
            "link",
            "set",
            &format!("v{i}"),
            "down",
        ])
    }

    /// Restores node `i`'s link.
    pub fn heal(&self, i: usize) -> Result<(), String> {
        ip(&["-n", &self.switch(), "link", "set", &format!("v{i}"), "up"])
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for i in 1..=self.nodes {
            let _ = ip(&["netns", "del", &self.namespace(i)]);
        }
        let _ = ip(&["netns", "del", &self.switch()]);
    }
}
