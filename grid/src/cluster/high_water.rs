//! Telling every node this node's invalidation high-water mark, in its own
//! word.
//!
//! A receiver finds a tail of invalidations it missed (the origin went quiet
//! after them) only by learning the origin's high-water mark: the numbers up
//! to it it has not seen become holes in its receive window
//! ([`super::sequence`]). The mark once travelled in gossip, where anyone who
//! gossips can write any node's state: a forged high mark made receivers
//! flush once and then take the forged numbers as seen, hiding a later
//! missed tail. So the origin sends its mark itself, as a `HighWater` request
//! over its own connection (the receiver takes it only from the origin, see
//! [`super::authority::takes_high_water`]), to each node it sends
//! invalidations to, every gossip interval until that node has acknowledged
//! the current mark. A node that was cut off acknowledges nothing, so it is
//! told again once it is reachable.
//!
//! [`MarkDelivery`] decides whom to tell: pure, no clock, no socket; the
//! maintenance task drives it. A member relays each client's mark to the
//! other clients (clients do not talk to clients) from [`Relayed`]: it
//! acknowledges the client once it has noted the mark, and delivers it to
//! each other client like its own, so one slow client never makes the
//! origin send again, nor the member re-tell the clients that have it.

use std::collections::HashMap;

use super::copy_gate::FanOuts;

/// A process: node id and generation.
pub(crate) type Process = (String, u64);

/// What one receiver has of this node's mark.
#[derive(Debug, Default, Clone, Copy)]
struct Told {
    /// The highest mark it acknowledged.
    acknowledged: u64,
    /// A request is on its way (one at a time per receiver).
    in_flight: bool,
    /// It acknowledged a mark (0 included) at least once.
    heard: bool,
    /// The fan-out ticket at which it was first seen as a target
    /// ([`FanOuts::now`]).
    introduced: u64,
}

/// Which receivers still have to be told this node's mark.
#[derive(Debug, Default)]
pub(crate) struct MarkDelivery {
    told: HashMap<Process, Told>,
}

impl MarkDelivery {
    /// The receivers among `targets` to send `mark` to now: those that have
    /// not acknowledged it and have no request on its way. Nothing while the
    /// mark is 0 (there is nothing to miss). Receivers that are no longer
    /// targets are forgotten, so the table follows the grid as it is.
    pub(crate) fn due(&mut self, mark: u64, targets: &[Process]) -> Vec<Process> {
        self.told.retain(|p, _| targets.contains(p));
        if mark == 0 {
            return Vec::new();
        }
        let mut due = Vec::new();
        for p in targets {
            let told = self.told.entry(p.clone()).or_default();
            if told.acknowledged < mark && !told.in_flight {
                told.in_flight = true;
                due.push(p.clone());
            }
        }
        due
    }

    /// This node's own mark: like [`due`](Self::due), but every target is
    /// told once even at mark 0, and a target is told only after every
    /// fan-out that may have picked its targets without it has ended
    /// ([`super::copy_gate`]): its first acknowledged mark is a newcomer's
    /// proof that this node sends it every invalidation from then on.
    pub(crate) fn due_own(
        &mut self,
        mark: u64,
        targets: &[Process],
        fan_outs: &FanOuts,
    ) -> Vec<Process> {
        self.told.retain(|p, _| targets.contains(p));
        let mut due = Vec::new();
        for p in targets {
            let told = self.told.entry(p.clone()).or_insert_with(|| Told {
                introduced: fan_outs.now(),
                ..Told::default()
            });
            let behind = !told.heard || told.acknowledged < mark;
            if behind && !told.in_flight && fan_outs.settled_before(told.introduced) {
                told.in_flight = true;
                due.push(p.clone());
            }
        }
        due
    }

    /// The request to `to` ended: acknowledged for `mark`, or not (`None`:
    /// refused, unreachable, timed out; it is sent again next time).
    pub(crate) fn answered(&mut self, to: &Process, acknowledged: Option<u64>) {
        if let Some(told) = self.told.get_mut(to) {
            told.in_flight = false;
            if let Some(mark) = acknowledged {
                told.acknowledged = told.acknowledged.max(mark);
                told.heard = true;
            }
        }
    }

    /// Receivers this node keeps a record for.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.told.len()
    }
}

/// On a member: the latest mark of each client origin, and which other
/// clients have it.
#[derive(Debug, Default)]
pub(crate) struct Relayed {
    origins: HashMap<String, (u64, u64, MarkDelivery)>,
}

impl Relayed {
    /// Notes `origin`'s mark at `generation`; a newer generation starts
    /// afresh, an older one or a lower mark changes nothing.
    pub(crate) fn note(&mut self, origin: &str, generation: u64, mark: u64) {
        let entry = self.origins.entry(origin.to_string()).or_insert((
            generation,
            0,
            MarkDelivery::default(),
        ));
        if generation > entry.0 {
            *entry = (generation, 0, MarkDelivery::default());
        }
        if generation == entry.0 {
            entry.1 = entry.1.max(mark);
        }
    }

    /// Per origin still relayed (`keep` it: live or admitted), the
    /// `(origin, generation, mark)` to send and the clients among
    /// `clients` due to be told it now (never the origin itself).
    pub(crate) fn due(
        &mut self,
        clients: &[Process],
        keep: impl Fn(&str, u64) -> bool,
    ) -> Vec<((String, u64, u64), Vec<Process>)> {
        self.origins.retain(|origin, (g, _, _)| keep(origin, *g));
        self.origins
            .iter_mut()
            .map(|(origin, (generation, mark, delivery))| {
                let others: Vec<Process> = clients
                    .iter()
                    .filter(|(id, _)| id != origin)
                    .cloned()
                    .collect();
                (
                    (origin.clone(), *generation, *mark),
                    delivery.due(*mark, &others),
                )
            })
            .filter(|(_, due)| !due.is_empty())
            .collect()
    }

    /// The relay of `origin`'s mark (at `generation`) to `to` ended.
    pub(crate) fn answered(
        &mut self,
        origin: &str,
        generation: u64,
        to: &Process,
        acknowledged: Option<u64>,
    ) {
        if let Some((g, _, delivery)) = self.origins.get_mut(origin) {
            if *g == generation {
                delivery.answered(to, acknowledged);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, generation: u64) -> Process {
        (id.to_string(), generation)
    }

    #[test]
    fn a_mark_is_sent_to_each_receiver_until_it_acknowledges_it() {
        let mut d = MarkDelivery::default();
        let targets = [p("a", 1), p("b", 1)];
        assert!(d.due(0, &targets).is_empty(), "nothing to miss yet");
        assert_eq!(d.due(3, &targets), targets);
        // One request at a time per receiver.
        assert!(d.due(3, &targets).is_empty());
        d.answered(&p("a", 1), Some(3));
        d.answered(&p("b", 1), None); // cut off
        assert_eq!(d.due(3, &targets), [p("b", 1)]);
        d.answered(&p("b", 1), Some(3));
        assert!(d.due(3, &targets).is_empty(), "everyone has the mark");
        // A new invalidation: everyone is told again.
        assert_eq!(d.due(4, &targets), targets);
    }

    #[test]
    fn a_member_relays_each_client_s_latest_mark_and_re_tells_only_those_without_it() {
        let mut r = Relayed::default();
        let all = |_: &str, _: u64| true;
        let clients = [p("c1", 1), p("c2", 1), p("c3", 1)];
        r.note("c1", 1, 4);
        let due = r.due(&clients, all);
        assert_eq!(
            due,
            [(("c1".to_string(), 1, 4), vec![p("c2", 1), p("c3", 1)])]
        );
        r.answered("c1", 1, &p("c2", 1), Some(4));
        r.answered("c1", 1, &p("c3", 1), None); // slow: told again later
        assert_eq!(r.due(&clients, all)[0].1, [p("c3", 1)]);
        r.answered("c1", 1, &p("c3", 1), Some(4));
        assert!(r.due(&clients, all).is_empty(), "everyone has it");
        // A client that comes back as a new process is told afresh; a
        // stale or lower mark changes nothing.
        r.note("c1", 1, 2);
        r.note("c1", 0, 9);
        assert_eq!(r.due(&[p("c2", 1), p("c3", 2)], all)[0].1, [p("c3", 2)]);
        // A new generation of the origin starts afresh; a gone one is dropped.
        r.note("c1", 2, 1);
        assert_eq!(r.due(&clients, all)[0].0, ("c1".to_string(), 2, 1));
        assert!(r.due(&clients, |o, _| o != "c1").is_empty());
    }

    #[test]
    fn a_late_answer_for_an_older_mark_does_not_count_for_the_newer_one() {
        let mut d = MarkDelivery::default();
        let targets = [p("a", 1)];
        assert_eq!(d.due(3, &targets), targets);
        d.answered(&p("a", 1), Some(3));
        assert_eq!(d.due(5, &targets), targets);
        d.answered(&p("a", 1), Some(3));
        assert_eq!(d.due(5, &targets), targets, "5 still unacknowledged");
    }

    #[test]
    fn own_mark_is_told_once_at_zero_and_only_after_earlier_fan_outs_ended() {
        let mut d = MarkDelivery::default();
        let mut f = FanOuts::default();
        assert_eq!(d.due_own(0, &[p("a", 1)], &f), [p("a", 1)]);
        // b is first seen while a fan-out that may not include it runs.
        let before = f.begin(None);
        assert!(d.due_own(0, &[p("a", 1), p("b", 1)], &f).is_empty());
        let after = f.begin(None);
        f.end(before, None);
        assert_eq!(d.due_own(0, &[p("a", 1), p("b", 1)], &f), [p("b", 1)]);
        f.end(after, None);
        d.answered(&p("a", 1), Some(0));
        d.answered(&p("b", 1), Some(0));
        assert!(d.due_own(0, &[p("a", 1), p("b", 1)], &f).is_empty());
        assert_eq!(d.due_own(1, &[p("a", 1), p("b", 1)], &f).len(), 2);
    }

    #[test]
    fn receivers_that_are_no_longer_targets_are_forgotten_and_a_restart_is_told_afresh() {
        let mut d = MarkDelivery::default();
        assert_eq!(d.due(2, &[p("a", 1), p("b", 1)]).len(), 2);
        d.answered(&p("a", 1), Some(2));
        d.answered(&p("b", 1), Some(2));
        // b restarted: its new generation has not heard the mark.
        assert_eq!(d.due(2, &[p("a", 1), p("b", 2)]), [p("b", 2)]);
        assert_eq!(d.len(), 2);
        // An answer from a forgotten receiver changes nothing.
        d.answered(&p("b", 1), Some(9));
        assert_eq!(d.len(), 2);
    }
}
