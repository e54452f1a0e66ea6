//! The history checker: judges a recorded history of operations and faults
//! against the grid's consistency model. Pure: it knows nothing of processes
//! or namespaces, so it can judge histories from any driver.
//!
//! Conventions a driver follows: times are offsets on one monotonic clock;
//! every written value is unique per (node, key), so a read's value names the
//! write it came from; a node's reads see only what that node wrote or
//! loaded (reads are local today).

use std::collections::HashMap;
use std::time::Duration;

/// What an operation asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `put KEY VALUE [TAG]`.
    Put {
        key: String,
        value: String,
        tag: Option<String>,
    },
    /// `get KEY`.
    Get { key: String },
    /// `load KEY VALUE [TAG]`: the loader would produce `value`.
    Load {
        key: String,
        value: String,
        tag: Option<String>,
    },
    /// `invalidate-key KEY`.
    InvalidateKey { key: String },
    /// `invalidate-tag TAG`.
    InvalidateTag { tag: String },
}

/// What an operation answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A write or invalidation succeeded (an invalidation: acknowledged by
    /// every node the origin considered live).
    Ok,
    /// A read found this value (a load: without running its loader).
    Value(String),
    /// A load ran its loader and returned this value.
    Loaded(String),
    /// A read found nothing.
    Missing,
    /// An invalidation was applied and sent, but these nodes did not
    /// acknowledge it.
    Unacknowledged(Vec<String>),
    /// Any other error, or no answer (the node was killed or stopped).
    Failed(String),
}

/// One operation: on which node, when it started and ended, what it asked
/// and what it answered.
#[derive(Clone, Debug)]
pub struct Op {
    pub node: String,
    pub start: Duration,
    pub end: Duration,
    pub kind: Kind,
    pub outcome: Outcome,
}

/// A window in which `node` could not hear the cluster (link cut, stopped,
/// killed); `end` is the heal (link up, SIGCONT, restart). Stale reads on
/// any node for invalidations that node originated are allowed until `end`
/// plus the heal bound; on that node itself, only until the cut bound after
/// the later of the cut and the invalidation's start (it must stop serving
/// what it cannot prove fresh), and never past `end` plus the heal bound.
#[derive(Clone, Debug)]
pub struct Fault {
    pub node: String,
    pub start: Duration,
    pub end: Duration,
}

/// The figures and violations the checker found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Operations judged.
    pub operations: usize,
    /// Operations that failed or got no answer.
    pub failed: usize,
    /// Reads that returned a value an earlier finished invalidation covered.
    pub stale_reads: usize,
    /// Of those, reads on a node that acknowledged the invalidation, started
    /// after its `Ok` (check a).
    pub stale_after_ok: usize,
    /// Of those, reads on a node that was cut off (named in
    /// `Unacknowledged`, or in a fault window) started later than the bound
    /// after the heal (check b).
    pub stale_beyond_bound: usize,
    /// Stale reads served while the node (or the invalidation's origin) was
    /// cut off.
    pub stale_while_cut: usize,
    /// Of the stale reads beyond a bound, those on a cut-off node while it
    /// was cut off, later than the cut bound (it kept serving).
    pub stale_beyond_cut_bound: usize,
    /// The longest a cut-off node was seen serving an invalidated value,
    /// from the invalidation's end, during its fault window.
    pub longest_stale_while_cut: Option<Duration>,
    /// The latest a stale read started after its node's heal.
    pub time_to_heal: Option<Duration>,
    /// From a fault's start to the first invalidation that named the node
    /// in `Unacknowledged` (the caller was told).
    pub time_to_detect: Option<Duration>,
    /// Invalidations that returned `Ok` while a node was in a fault window
    /// (the caller was not told about that node).
    pub ok_while_cut: usize,
    /// Loads of one key on one node that ran their loaders concurrently
    /// (single-flight broken; check c).
    pub duplicate_loads: usize,
    /// The most loader runs for one key on one node.
    pub max_loads_per_key_node: usize,
    /// Loader runs for one key on two nodes at once while the membership
    /// was steady (no fault window, nor its settling, around either): the
    /// owner grants one lease per key and epoch (check c, grid-wide).
    pub duplicate_loads_across_nodes: usize,
    /// A description of each violation (checks a, b, c).
    pub violations: Vec<String>,
}

impl Report {
    /// Prints the figures on one line, for a scenario's output.
    pub fn summary(&self, scenario: &str) -> String {
        let ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{} ms", d.as_millis()));
        format!(
            "{scenario}: operations={} failed={} stale_reads={} stale_after_ok={} \
             stale_beyond_bound={} stale_while_cut={} stale_beyond_cut_bound={} \
             longest_stale_while_cut={} \
             time_to_detect={} time_to_heal={} ok_while_cut={} duplicate_loads={} \
             max_loads_per_key_node={} duplicate_loads_across_nodes={}",
            self.operations,
            self.failed,
            self.stale_reads,
            self.stale_after_ok,
            self.stale_beyond_bound,
            self.stale_while_cut,
            self.stale_beyond_cut_bound,
            ms(self.longest_stale_while_cut),
            ms(self.time_to_detect),
            ms(self.time_to_heal),
            self.ok_while_cut,
            self.duplicate_loads,
            self.max_loads_per_key_node,
            self.duplicate_loads_across_nodes,
        )
    }
}

fn covers(inv: &Kind, key: &str, tag: Option<&str>) -> bool {
    match inv {
        Kind::InvalidateKey { key: k } => k == key,
        Kind::InvalidateTag { tag: t } => tag == Some(t.as_str()),
        _ => false,
    }
}

fn max_opt(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.max(b)))
}

/// The stale-read bounds the consistency model states.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// After a heal, for every node.
    pub heal: Duration,
    /// For a cut-off node while it is cut off: from the later of the cut
    /// and the invalidation's start (the isolation rule).
    pub cut: Duration,
    /// How long after a fault window the membership may still change
    /// (removals, a rejoin, a new owner): loads then may run under two
    /// epochs at once.
    pub settle: Duration,
}

/// Judges `ops` and `faults` against `bounds`.
pub fn check(ops: &[Op], faults: &[Fault], bounds: Bounds) -> Report {
    let bound = bounds.heal;
    let mut report = Report {
        operations: ops.len(),
        failed: ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Failed(_)))
            .count(),
        ..Report::default()
    };
    // (node, key, value) -> the write that stored it.
    let mut writes: HashMap<(&str, &str, &str), &Op> = HashMap::new();
    for op in ops {
        match (&op.kind, &op.outcome) {
            (Kind::Put { key, value, .. }, Outcome::Ok)
            | (Kind::Load { key, value, .. }, Outcome::Loaded(_)) => {
                writes.insert((&op.node, key, value), op);
            }
            _ => {}
        }
    }
    let invalidations: Vec<&Op> = ops
        .iter()
        .filter(|o| {
            matches!(
                o.kind,
                Kind::InvalidateKey { .. } | Kind::InvalidateTag { .. }
            )
        })
        // `Unacknowledged` with no names says the origin could not name the
        // holders at all (it was not admitted, or between two generations):
        // it claims no node acknowledged, so nothing is judged against it.
        .filter(|o| match &o.outcome {
            Outcome::Ok => true,
            Outcome::Unacknowledged(named) => !named.is_empty(),
            _ => false,
        })
        .collect();

    for read in ops {
        let (key, value) = match (&read.kind, &read.outcome) {
            (Kind::Get { key }, Outcome::Value(v))
            | (Kind::Load { key, .. }, Outcome::Value(v)) => (key, v),
            _ => continue,
        };
        let Some(write) = writes.get(&(read.node.as_str(), key.as_str(), value.as_str())) else {
            continue;
        };
        let tag = match &write.kind {
            Kind::Put { tag, .. } | Kind::Load { tag, .. } => tag.as_deref(),
            _ => None,
        };
        // The invalidations that ended before the read started and began
        // after the write ended: the read should not have seen the value.
        let mut verdict: Option<(Duration, bool, Option<&Fault>, &Op)> = None;
        for inv in &invalidations {
            if !(write.end < inv.start && inv.end < read.start && covers(&inv.kind, key, tag)) {
                continue;
            }
            let named =
                matches!(&inv.outcome, Outcome::Unacknowledged(n) if n.contains(&read.node));
            // A fault of the reader, or of the origin (its `Ok` covers only
            // the nodes it could hear), around the invalidation.
            let fault = faults
                .iter()
                .filter(|f| f.node == read.node || f.node == inv.node)
                .filter(|f| f.start < inv.end && f.end + bound > inv.start)
                .max_by_key(|f| f.end);
            let (deadline, excused) = match (fault, named) {
                // The reader itself was cut off: it stops serving within the
                // cut bound, whatever the partition's length.
                (Some(f), _) if f.node == read.node && inv.node != read.node => {
                    let cut = f.start.max(inv.start) + bounds.cut;
                    ((f.end + bound).min(cut), true)
                }
                (Some(f), _) => (f.end + bound, true),
                (None, true) => (inv.end + bound, true),
                (None, false) => (inv.end, false),
            };
            // Judge by the strictest invalidation.
            if verdict.is_none_or(|(d, ..)| deadline < d) {
                verdict = Some((deadline, excused, fault, inv));
            }
        }
        let Some((deadline, excused, fault, inv)) = verdict else {
            continue;
        };
        report.stale_reads += 1;
        if let Some(f) = fault {
            if read.start < f.end {
                report.stale_while_cut += 1;
                report.longest_stale_while_cut = max_opt(
                    report.longest_stale_while_cut,
                    read.start - inv.end.max(f.start),
                );
            } else {
                report.time_to_heal = max_opt(report.time_to_heal, read.start - f.end);
            }
        }
        if read.start > deadline {
            let what = if excused {
                report.stale_beyond_bound += 1;
                match fault {
                    Some(f) if f.node == read.node && read.start < f.end => {
                        report.stale_beyond_cut_bound += 1;
                        "while cut off, beyond the cut bound"
                    }
                    _ => "beyond the bound after the heal",
                }
            } else {
                report.stale_after_ok += 1;
                "after an acknowledged invalidation"
            };
            report.violations.push(format!(
                "{} read {key}={value} at {:?}, {what} ({:?} from {} ended {:?}: {:?})",
                read.node, read.start, inv.kind, inv.node, inv.end, inv.outcome
            ));
        }
    }

    for f in faults {
        if let Some(first) = invalidations
            .iter()
            .filter(|i| i.end > f.start)
            .filter(|i| matches!(&i.outcome, Outcome::Unacknowledged(n) if n.contains(&f.node)))
            .map(|i| i.end)
            .min()
        {
            report.time_to_detect = max_opt(report.time_to_detect, first - f.start);
        }
        report.ok_while_cut += invalidations
            .iter()
            .filter(|i| i.node != f.node && i.outcome == Outcome::Ok)
            .filter(|i| i.start >= f.start && i.end <= f.end)
            .count();
    }

    // Check c: per key per node, loader runs must not overlap.
    let mut loads: HashMap<(&str, &str), Vec<&Op>> = HashMap::new();
    for op in ops {
        if let (Kind::Load { key, .. }, Outcome::Loaded(_)) = (&op.kind, &op.outcome) {
            loads.entry((&op.node, key)).or_default().push(op);
        }
    }
    // Grid-wide: while the membership is steady, one lease per key.
    let steady = |o: &Op| {
        faults
            .iter()
            .all(|f| o.end < f.start || o.start > f.end + bounds.settle)
    };
    let mut by_key: HashMap<&str, Vec<&Op>> = HashMap::new();
    for ((_, key), runs) in &loads {
        by_key
            .entry(key)
            .or_default()
            .extend(runs.iter().copied().filter(|o| steady(o)));
    }
    for (key, mut runs) in by_key {
        runs.sort_by_key(|o| o.start);
        for (i, a) in runs.iter().enumerate() {
            for b in runs[i + 1..].iter().take_while(|b| b.start < a.end) {
                if a.node != b.node {
                    report.duplicate_loads_across_nodes += 1;
                    report.violations.push(format!(
                        "{} and {} ran loaders for {key} at once ({:?} and {:?})",
                        a.node, b.node, a.start, b.start
                    ));
                }
            }
        }
    }
    for ((node, key), mut runs) in loads {
        report.max_loads_per_key_node = report.max_loads_per_key_node.max(runs.len());
        runs.sort_by_key(|o| o.start);
        for pair in runs.windows(2) {
            if pair[1].start < pair[0].end {
                report.duplicate_loads += 1;
                report.violations.push(format!(
                    "{node} ran two loaders for {key} at once ({:?} and {:?})",
                    pair[0].start, pair[1].start
                ));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Bounds = Bounds {
        heal: Duration::from_millis(500),
        cut: Duration::from_millis(1_200),
        settle: Duration::from_secs(20),
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn op(node: &str, start: u64, end: u64, kind: Kind, outcome: Outcome) -> Op {
        Op {
            node: node.into(),
            start: ms(start),
            end: ms(end),
            kind,
            outcome,
        }
    }

    fn put(node: &str, at: u64, value: &str) -> Op {
        let kind = Kind::Put {
            key: "k".into(),
            value: value.into(),
            tag: Some("t".into()),
        };
        op(node, at, at + 1, kind, Outcome::Ok)
    }

    fn get(node: &str, at: u64, found: Option<&str>) -> Op {
        let outcome = found.map_or(Outcome::Missing, |v| Outcome::Value(v.into()));
        op(node, at, at + 1, Kind::Get { key: "k".into() }, outcome)
    }

    fn inv_tag(node: &str, start: u64, end: u64, outcome: Outcome) -> Op {
        op(
            node,
            start,
            end,
            Kind::InvalidateTag { tag: "t".into() },
            outcome,
        )
    }

    fn load(node: &str, start: u64, end: u64, value: &str, loaded: bool) -> Op {
        let kind = Kind::Load {
            key: "k".into(),
            value: value.into(),
            tag: None,
        };
        let outcome = if loaded {
            Outcome::Loaded(value.into())
        } else {
            Outcome::Value(value.into())
        };
        op(node, start, end, kind, outcome)
    }

    #[test]
    fn a_clean_history_has_no_stale_reads() {
        let ops = [
            put("n2", 0, "v1"),
            get("n2", 5, Some("v1")),
            inv_tag("n1", 10, 20, Outcome::Ok),
            get("n2", 30, None),
            put("n2", 40, "v2"),
            get("n2", 50, Some("v2")),
        ];
        let r = check(&ops, &[], BOUND);
        assert_eq!(r.operations, 6);
        assert_eq!(r.stale_reads, 0);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
    }

    #[test]
    fn an_old_value_after_an_ok_is_a_violation_of_check_a() {
        let ops = [
            put("n2", 0, "v1"),
            inv_tag("n1", 10, 20, Outcome::Ok),
            get("n2", 21, Some("v1")),
        ];
        let r = check(&ops, &[], BOUND);
        assert_eq!((r.stale_reads, r.stale_after_ok), (1, 1));
        assert_eq!(r.violations.len(), 1);
    }

    #[test]
    fn an_unacknowledged_without_names_claims_no_acknowledgement() {
        let ops = [
            put("n2", 0, "v1"),
            inv_tag("n1", 10, 20, Outcome::Unacknowledged(Vec::new())),
            get("n2", 21, Some("v1")),
        ];
        let r = check(&ops, &[], BOUND);
        assert_eq!(r.stale_reads, 0, "{:?}", r.violations);
    }

    #[test]
    fn reads_concurrent_with_the_invalidation_or_of_later_writes_are_not_stale() {
        let ops = [
            put("n2", 0, "v1"),
            inv_tag("n1", 10, 20, Outcome::Ok),
            get("n2", 15, Some("v1")), // started before the Ok
            put("n2", 12, "v2"),       // overlaps the invalidation
            get("n2", 30, Some("v2")),
        ];
        let r = check(&ops, &[], BOUND);
        assert_eq!(r.stale_reads, 0, "{:?}", r.violations);
    }

    #[test]
    fn an_invalidation_of_another_key_or_tag_does_not_count() {
        let ops = [
            put("n2", 0, "v1"),
            op(
                "n1",
                10,
                20,
                Kind::InvalidateKey { key: "x".into() },
                Outcome::Ok,
            ),
            op(
                "n1",
                10,
                20,
                Kind::InvalidateTag { tag: "u".into() },
                Outcome::Ok,
            ),
            get("n2", 30, Some("v1")),
        ];
        assert_eq!(check(&ops, &[], BOUND).stale_reads, 0);
        let by_key = [
            put("n2", 0, "v1"),
            op(
                "n1",
                10,
                20,
                Kind::InvalidateKey { key: "k".into() },
                Outcome::Ok,
            ),
            get("n2", 30, Some("v1")),
        ];
        assert_eq!(check(&by_key, &[], BOUND).stale_after_ok, 1);
    }

    #[test]
    fn a_cut_off_node_that_keeps_serving_past_the_cut_bound_is_a_violation() {
        let fault = Fault {
            node: "n3".into(),
            start: ms(100),
            end: ms(10_000),
        };
        let ops = [
            put("n3", 0, "v1"),
            inv_tag("n1", 200, 201, Outcome::Ok),
            get("n3", 1_000, Some("v1")), // within 1.2 s of the invalidation
            put("n3", 3_000, "v2"),       // stored while cut off
            inv_tag("n1", 3_100, 3_101, Outcome::Ok),
            get("n3", 3_200, Some("v2")), // within the bound of that one
            get("n3", 5_000, Some("v1")), // kept serving: beyond
            get("n3", 5_000, Some("v2")), // kept serving: beyond
        ];
        let r = check(&ops, std::slice::from_ref(&fault), BOUND);
        assert_eq!(r.stale_while_cut, 4);
        assert_eq!(r.stale_beyond_cut_bound, 2, "{:?}", r.violations);
        assert_eq!(r.stale_beyond_bound, 2);
        assert_eq!(r.violations.len(), 2);
        assert!(
            r.violations[0].contains("while cut off"),
            "{:?}",
            r.violations
        );
    }

    #[test]
    fn a_cut_off_node_may_serve_until_the_bound_after_the_heal_and_not_later() {
        let fault = Fault {
            node: "n3".into(),
            start: ms(100),
            end: ms(2_600),
        };
        let named = Outcome::Unacknowledged(vec!["n3".into()]);
        let ops = [
            put("n3", 0, "v1"),
            inv_tag("n1", 2_000, 2_200, named),
            get("n3", 1_000, Some("v1")), // concurrent with the invalidation
            get("n3", 2_500, Some("v1")), // cut off: within bound
            get("n3", 3_000, Some("v1")), // healed 400 ms ago: within bound
            get("n3", 3_200, Some("v1")), // 600 ms after the heal: beyond
        ];
        let r = check(&ops, std::slice::from_ref(&fault), BOUND);
        assert_eq!(r.stale_reads, 3);
        assert_eq!(r.stale_after_ok, 0);
        assert_eq!(r.stale_beyond_bound, 1, "{:?}", r.violations);
        assert_eq!(r.stale_while_cut, 1);
        assert_eq!(r.stale_beyond_cut_bound, 0);
        assert_eq!(r.longest_stale_while_cut, Some(ms(300)));
        assert_eq!(r.time_to_detect, Some(ms(2_100)));
        assert_eq!(r.time_to_heal, Some(ms(600)));
    }

    #[test]
    fn an_ok_while_a_node_is_cut_off_is_counted_and_excused_only_within_the_cut_bound() {
        let fault = Fault {
            node: "n3".into(),
            start: ms(100),
            end: ms(5_000),
        };
        let ops = [
            put("n3", 0, "v1"),
            inv_tag("n1", 1_000, 1_001, Outcome::Ok),
            get("n3", 2_000, Some("v1")),
            get("n3", 5_100, Some("v1")), // after the heal, still stale
        ];
        let r = check(&ops, std::slice::from_ref(&fault), BOUND);
        assert_eq!(r.ok_while_cut, 1);
        assert_eq!(r.stale_while_cut, 1);
        assert_eq!(r.longest_stale_while_cut, Some(ms(999)));
        assert_eq!(r.stale_beyond_bound, 1);
        assert_eq!(r.stale_beyond_cut_bound, 0);
        assert_eq!(r.time_to_heal, Some(ms(100)));
        assert_eq!(r.time_to_detect, None);
    }

    #[test]
    fn an_ok_from_a_cut_off_origin_excuses_the_others_until_the_bound_after_its_heal() {
        let fault = Fault {
            node: "n3".into(),
            start: ms(100),
            end: ms(1_000),
        };
        let ops = [
            put("n1", 0, "v1"),
            inv_tag("n3", 200, 201, Outcome::Ok),
            get("n1", 900, Some("v1")),
            get("n1", 1_400, Some("v1")),
            get("n1", 1_600, Some("v1")),
        ];
        let r = check(&ops, std::slice::from_ref(&fault), BOUND);
        assert_eq!((r.stale_reads, r.stale_while_cut), (3, 1));
        assert_eq!((r.stale_after_ok, r.stale_beyond_bound), (0, 1));
    }

    #[test]
    fn a_named_node_without_a_fault_gets_the_bound_from_the_invalidation() {
        let named = Outcome::Unacknowledged(vec!["n2".into()]);
        let ops = [
            put("n2", 0, "v1"),
            inv_tag("n1", 10, 20, named),
            get("n2", 100, Some("v1")),
            get("n2", 600, Some("v1")),
        ];
        let r = check(&ops, &[], BOUND);
        assert_eq!((r.stale_reads, r.stale_beyond_bound), (2, 1));
    }

    #[test]
    fn loaded_values_are_writes_and_overlapping_loader_runs_are_duplicates() {
        let ops = [
            load("n1", 0, 10, "v1", true),
            load("n1", 5, 12, "v2", true),
            load("n1", 20, 21, "v1", false),
            load("n2", 0, 10, "v3", true),
        ];
        let r = check(&ops, &[], BOUND);
        assert_eq!(r.duplicate_loads, 1);
        assert_eq!(r.max_loads_per_key_node, 2);
        // n2's run overlaps both of n1's: two leases for one key at once.
        assert_eq!(r.duplicate_loads_across_nodes, 2);
        // Around a fault (and while the membership settles after it) two
        // owners may each grant one.
        let cut = Fault {
            node: "n3".into(),
            start: ms(1),
            end: ms(2),
        };
        let r = check(&ops, &[cut], BOUND);
        assert_eq!(r.duplicate_loads_across_nodes, 0);
        let key_inv = op(
            "n2",
            30,
            40,
            Kind::InvalidateKey { key: "k".into() },
            Outcome::Ok,
        );
        let stale = [
            load("n1", 0, 10, "v1", true),
            key_inv,
            load("n1", 50, 51, "v1", false),
        ];
        assert_eq!(check(&stale, &[], BOUND).stale_after_ok, 1);
    }

    #[test]
    fn failed_operations_are_counted_and_not_judged() {
        let ops = [
            put("n2", 0, "v1"),
            inv_tag("n1", 10, 20, Outcome::Failed("no answer".into())),
            get("n2", 30, Some("v1")),
        ];
        let r = check(&ops, &[], BOUND);
        assert_eq!((r.failed, r.stale_reads), (1, 0));
    }
}
