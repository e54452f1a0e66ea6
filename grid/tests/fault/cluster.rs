//! A cluster of node processes, one per namespace of a private network,
//! and the faults a scenario injects: link cuts, SIGKILL, SIGSTOP/SIGCONT,
//! restarts. The workload and the scenario share it: each node sits behind
//! a lock, signals go by pid so a stopped node never blocks them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::netns::Network;
use super::process::{self, NodeProcess, Spec};

/// One clock for every recorded time: offsets from the cluster's start.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    /// Now, as an offset.
    pub fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

struct Slot {
    spec: Spec,
    process: Mutex<Option<NodeProcess>>,
    pid: AtomicU32,
}

/// Nodes `n1..nN`; `n1` founds the cluster, the others seed from it.
pub struct Cluster {
    slots: Vec<Slot>,
    net: Network,
    /// The clock every operation and fault is recorded on.
    pub clock: Clock,
}

const ASK: Duration = Duration::from_secs(20);

impl Cluster {
    /// Starts `n` nodes and waits until every one sees all of them as
    /// members.
    pub fn start(net: Network, n: usize) -> Result<Cluster, String> {
        let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let certs = process::certs(&id_refs)?;
        let founder = Spec::addr(&Network::addr(1));
        let mut slots = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let spec = Spec {
                id: id.clone(),
                namespace: net.namespace(i + 1),
                ip: Network::addr(i + 1),
                seeds: if i == 0 {
                    vec![]
                } else {
                    vec![founder.clone()]
                },
                bootstrap: i == 0,
                certs: certs.clone(),
            };
            let node = NodeProcess::start(&spec).inspect_err(|_| {
                let _ = std::fs::remove_dir_all(&certs);
            })?;
            slots.push(Slot {
                spec,
                pid: AtomicU32::new(node.pid()),
                process: Mutex::new(Some(node)),
            });
        }
        let cluster = Cluster {
            slots,
            net,
            clock: Clock(Instant::now()),
        };
        let all: Vec<usize> = (1..=n).collect();
        cluster.views_agree(&all, &id_refs, Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn slot(&self, i: usize) -> &Slot {
        &self.slots[i - 1]
    }

    /// Node `i`'s id.
    pub fn id(&self, i: usize) -> &str {
        &self.slot(i).spec.id
    }

    /// Asks node `i`; `None` if it is down or did not answer.
    pub fn ask(&self, i: usize, command: &str) -> Option<String> {
        let mut process = self
            .slot(i)
            .process
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        process.as_mut()?.ask(command, ASK)
    }

    /// Whether node `i` has a process (it may be stopped).
    pub fn is_up(&self, i: usize) -> bool {
        self.slot(i)
            .process
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Node `i`'s member list, from `view`.
    pub fn members(&self, i: usize) -> Option<String> {
        let view = self.ask(i, "view")?;
        let members = view.strip_prefix("VIEW members=")?.split(' ').next()?;
        Some(members.to_string())
    }

    /// Waits until each of `nodes` lists exactly `expected` as members;
    /// returns how long that took, or every node's last view.
    pub fn views_agree(
        &self,
        nodes: &[usize],
        expected: &[&str],
        timeout: Duration,
    ) -> Result<Duration, String> {
        let want = expected.join(",");
        let start = Instant::now();
        loop {
            let views: Vec<Option<String>> = nodes.iter().map(|&i| self.members(i)).collect();
            if views.iter().all(|v| v.as_deref() == Some(want.as_str())) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                let seen: Vec<String> = nodes
                    .iter()
                    .zip(&views)
                    .map(|(&i, v)| format!("{}: {}", self.id(i), v.as_deref().unwrap_or("-")))
                    .collect();
                return Err(format!(
                    "members did not agree on {want} within {timeout:?}: {}",
                    seen.join("; ")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The index of the Raft leader, as node `asked` sees it.
    pub fn leader(&self, asked: usize) -> Option<usize> {
        let status = self.ask(asked, "status")?;
        let leader = status.split(' ').find_map(|w| w.strip_prefix("leader="))?;
        (1..=self.slots.len()).find(|&i| self.id(i) == leader)
    }

    /// Cuts node `i`'s link; returns when.
    pub fn cut(&self, i: usize) -> Result<Duration, String> {
        self.net.cut(i)?;
        Ok(self.clock.now())
    }

    /// Restores node `i`'s link; returns when.
    pub fn heal(&self, i: usize) -> Result<Duration, String> {
        self.net.heal(i)?;
        Ok(self.clock.now())
    }

    /// Sends `signal` (STOP, CONT) to node `i`; returns when.
    pub fn signal(&self, i: usize, signal: &str) -> Duration {
        // 0 once the process is reaped: its pid may belong to another.
        let pid = self.slot(i).pid.load(Ordering::SeqCst);
        if pid != 0 {
            process::signal_pid(pid, signal);
        }
        self.clock.now()
    }

    /// SIGKILLs node `i` and reaps it; returns when it was killed.
    pub fn kill(&self, i: usize) -> Duration {
        let at = self.signal(i, "KILL");
        let mut process = self
            .slot(i)
            .process
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        drop(process.take());
        self.slot(i).pid.store(0, Ordering::SeqCst);
        at
    }

    /// Starts node `i` again on the same address, with `seeds` (the
    /// founder's own start had none), never bootstrapping: a restart joins
    /// the running cluster. Returns when it listens.
    pub fn restart(&self, i: usize, seeds: Vec<String>) -> Result<Duration, String> {
        let slot = self.slot(i);
        let spec = Spec {
            seeds,
            bootstrap: false,
            ..slot.spec.clone()
        };
        let node = NodeProcess::start(&spec)?;
        slot.pid.store(node.pid(), Ordering::SeqCst);
        *slot.process.lock().unwrap_or_else(|e| e.into_inner()) = Some(node);
        Ok(self.clock.now())
    }

    /// The founder's address, as a seed.
    pub fn founder_seed(&self) -> String {
        Spec::addr(&Network::addr(1))
    }

    /// Node `i`'s address, as a seed.
    pub fn seed(&self, i: usize) -> String {
        Spec::addr(&Network::addr(i))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGKILL ends stopped nodes too; processes go before the network.
        for slot in &self.slots {
            drop(
                slot.process
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take(),
            );
        }
        let _ = std::fs::remove_dir_all(&self.slots[0].spec.certs);
    }
}
