//! The workload driver: puts, gets, loads and invalidations on one node,
//! bounded in count and time, each recorded with its start, end and result
//! on the cluster's clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::cluster::Cluster;
use super::history::{Kind, Op, Outcome};

/// Keys `k0..k15`; key `ki` carries tag `t{i % 4}`.
const KEYS: u64 = 16;
const TAGS: u64 = 4;
const PAUSE: Duration = Duration::from_millis(10);

/// Runs operations on node `i` until `done` is set or `max_ops` ran.
/// Values are unique per node (`n1-17`), as the checker expects.
pub fn drive(cluster: &Cluster, i: usize, done: &AtomicBool, max_ops: usize) -> Vec<Op> {
    let node = cluster.id(i).to_string();
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64 ^ (i as u64) << 32;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut ops = Vec::new();
    let mut written = 0;
    while !done.load(Ordering::SeqCst) && ops.len() < max_ops {
        if !cluster.is_up(i) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let k = next() % KEYS;
        let (key, tag) = (format!("k{k}"), format!("t{}", k % TAGS));
        let roll = next() % 100;
        let mut value = || {
            written += 1;
            format!("{node}-{written}")
        };
        // Mostly read-through, as a cache is used: a value stays until an
        // invalidation, so a missed one shows as a stale read.
        let kind = match roll {
            0..65 => Kind::Load {
                key,
                value: value(),
                tag: Some(tag),
            },
            65..85 => Kind::Get { key },
            85..95 => Kind::Put {
                key,
                value: value(),
                tag: Some(tag),
            },
            95..97 => Kind::InvalidateTag { tag },
            _ => Kind::InvalidateKey { key },
        };
        let command = match &kind {
            Kind::Put { key, value, tag } | Kind::Load { key, value, tag } => {
                let verb = if matches!(kind, Kind::Put { .. }) {
                    "put"
                } else {
                    "load"
                };
                format!("{verb} {key} {value} {}", tag.as_deref().unwrap_or(""))
            }
            Kind::Get { key } => format!("get {key}"),
            Kind::InvalidateKey { key } => format!("invalidate-key {key}"),
            Kind::InvalidateTag { tag } => format!("invalidate-tag {tag}"),
        };
        let start = cluster.clock.now();
        let reply = cluster.ask(i, command.trim_end());
        let end = cluster.clock.now();
        let outcome = reply.map_or(Outcome::Failed("no answer".into()), |r| parse(&r));
        ops.push(Op {
            node: node.clone(),
            start,
            end,
            kind,
            outcome,
        });
        std::thread::sleep(PAUSE);
    }
    ops
}

/// Reads a node's answer.
fn parse(reply: &str) -> Outcome {
    if reply == "OK" {
        Outcome::Ok
    } else if reply == "NONE" {
        Outcome::Missing
    } else if let Some(v) = reply.strip_prefix("VALUE ") {
        match v.strip_suffix(" loaded") {
            Some(v) => Outcome::Loaded(v.to_string()),
            None => Outcome::Value(v.to_string()),
        }
    } else if let Some(rest) = reply.strip_prefix("ERR invalidation not acknowledged by [") {
        let list = rest.split(']').next().unwrap_or_default();
        let nodes = list
            .split(',')
            .map(|n| n.trim().trim_matches('"').to_string())
            .filter(|n| !n.is_empty())
            .collect();
        Outcome::Unacknowledged(nodes)
    } else {
        Outcome::Failed(reply.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed() {
        assert_eq!(parse("OK"), Outcome::Ok);
        assert_eq!(parse("NONE"), Outcome::Missing);
        assert_eq!(parse("VALUE n1-3"), Outcome::Value("n1-3".into()));
        assert_eq!(parse("VALUE n1-3 loaded"), Outcome::Loaded("n1-3".into()));
        assert_eq!(
            parse(r#"ERR invalidation not acknowledged by ["n2", "n3"] within the timeout"#),
            Outcome::Unacknowledged(vec!["n2".into(), "n3".into()])
        );
        assert_eq!(parse("ERR boom"), Outcome::Failed("ERR boom".into()));
    }
}
