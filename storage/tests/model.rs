//! Model-based test: random operation sequences run against the store and
//! against a plain reference model with a controllable clock; every read and
//! every fill outcome must agree.

use std::collections::HashMap;
use std::time::Duration;

use hydracache_storage::{Clock, Expiry, FillOutcome, FillTicket, ManualClock, StoreConfig};
use proptest::prelude::*;

const KEYS: u8 = 6;
const TAGS: [&str; 3] = ["t0", "t1", "t2"];

#[derive(Clone, Debug)]
enum Op {
    Insert {
        key: u8,
        value: u32,
        ttl: Option<u64>,
        tags: Vec<usize>,
    },
    Get(u8),
    Contains(u8),
    Remove(u8),
    InvalidateTag(usize),
    Advance(u64),
    Flush,
    Sweep,
    BeginFill {
        key: u8,
        tags: Vec<usize>,
    },
    CompleteFill {
        which: usize,
        value: u32,
        ttl: Option<u64>,
    },
    AbandonFill(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let tags = proptest::collection::vec(0..TAGS.len(), 0..3);
    let ttl = proptest::option::of(1u64..50);
    prop_oneof![
        4 => (0..KEYS, any::<u32>(), ttl.clone(), tags.clone())
            .prop_map(|(key, value, ttl, tags)| Op::Insert { key, value, ttl, tags }),
        4 => (0..KEYS).prop_map(Op::Get),
        1 => (0..KEYS).prop_map(Op::Contains),
        1 => (0..KEYS).prop_map(Op::Remove),
        2 => (0..TAGS.len()).prop_map(Op::InvalidateTag),
        2 => (0u64..40).prop_map(Op::Advance),
        1 => Just(Op::Flush),
        1 => Just(Op::Sweep),
        2 => (0..KEYS, tags).prop_map(|(key, tags)| Op::BeginFill { key, tags }),
        2 => (0usize..4, any::<u32>(), ttl).prop_map(|(which, value, ttl)| Op::CompleteFill { which, value, ttl }),
        1 => (0usize..4).prop_map(Op::AbandonFill),
    ]
}

#[derive(Clone)]
struct ModelEntry {
    value: u32,
    expires_at: Option<u64>,
    tags: Vec<(usize, u64)>,
}

#[derive(Default)]
struct Model {
    now: u64,
    entries: HashMap<u8, ModelEntry>,
    tag_gen: [u64; 3],
}

struct ModelFill {
    key: u8,
    tags: Vec<(usize, u64)>,
    touched: bool,
}

impl Model {
    fn live(&self, key: u8) -> Option<u32> {
        let e = self.entries.get(&key)?;
        let fresh = e.expires_at.is_none_or(|t| t > self.now)
            && e.tags.iter().all(|&(t, g)| self.tag_gen[t] == g);
        fresh.then_some(e.value)
    }

    fn live_count(&self) -> usize {
        self.entries
            .keys()
            .filter(|&&k| self.live(k).is_some())
            .count()
    }
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

fn expiry(ttl: Option<u64>) -> Expiry {
    ttl.map_or(Expiry::Never, |ms| Expiry::After(Duration::from_millis(ms)))
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let store = StoreConfig::new()
        .capacity_bytes(1 << 20)
        .clock(Clock::Manual(clock.clone()))
        .shards(2)
        .build();
    let mut model = Model::default();
    let mut fills: Vec<(FillTicket, ModelFill)> = Vec::new();

    for op in ops {
        match op {
            Op::Insert {
                key: k,
                value,
                ttl,
                tags,
            } => {
                let names: Vec<&str> = tags.iter().map(|&t| TAGS[t]).collect();
                store.insert(&key(k), &value, expiry(ttl), &names).unwrap();
                model.entries.insert(
                    k,
                    ModelEntry {
                        value,
                        expires_at: ttl.map(|t| model.now + t),
                        tags: tags.iter().map(|&t| (t, model.tag_gen[t])).collect(),
                    },
                );
                fills
                    .iter_mut()
                    .filter(|(_, f)| f.key == k)
                    .for_each(|(_, f)| f.touched = true);
            }
            Op::Get(k) => {
                prop_assert_eq!(
                    store.get::<u32>(&key(k)).unwrap(),
                    model.live(k),
                    "get {}",
                    k
                );
            }
            Op::Contains(k) => {
                prop_assert_eq!(store.contains_key(&key(k)), model.live(k).is_some());
            }
            Op::Remove(k) => {
                store.remove(&key(k));
                model.entries.remove(&k);
                fills
                    .iter_mut()
                    .filter(|(_, f)| f.key == k)
                    .for_each(|(_, f)| f.touched = true);
            }
            Op::InvalidateTag(t) => {
                store.invalidate_tag(TAGS[t].as_bytes());
                model.tag_gen[t] += 1;
            }
            Op::Advance(ms) => {
                clock.advance(Duration::from_millis(ms));
                model.now += ms;
            }
            Op::Flush => {
                store.flush();
                model.entries.clear();
                fills.iter_mut().for_each(|(_, f)| f.touched = true);
            }
            Op::Sweep => {
                store.sweep(usize::MAX);
                prop_assert_eq!(
                    store.len(),
                    model.live_count(),
                    "after a full sweep only live entries remain"
                );
            }
            Op::BeginFill { key: k, tags } => {
                let names: Vec<&str> = tags.iter().map(|&t| TAGS[t]).collect();
                let ticket = store.begin_fill(&key(k), &names).unwrap();
                let snapshot = tags.iter().map(|&t| (t, model.tag_gen[t])).collect();
                fills.push((
                    ticket,
                    ModelFill {
                        key: k,
                        tags: snapshot,
                        touched: false,
                    },
                ));
            }
            Op::CompleteFill { which, value, ttl } => {
                if fills.is_empty() {
                    continue;
                }
                let (ticket, fill) = fills.remove(which % fills.len());
                let stale = fill.touched || fill.tags.iter().any(|&(t, g)| model.tag_gen[t] != g);
                let outcome = store.complete_fill(ticket, &value, expiry(ttl)).unwrap();
                prop_assert_eq!(
                    outcome,
                    if stale {
                        FillOutcome::Stale
                    } else {
                        FillOutcome::Stored
                    }
                );
                if !stale {
                    model.entries.insert(
                        fill.key,
                        ModelEntry {
                            value,
                            expires_at: ttl.map(|t| model.now + t),
                            tags: fill.tags,
                        },
                    );
                    fills
                        .iter_mut()
                        .filter(|(_, f)| f.key == fill.key)
                        .for_each(|(_, f)| f.touched = true);
                }
            }
            Op::AbandonFill(which) => {
                if !fills.is_empty() {
                    fills.remove(which % fills.len());
                }
            }
        }
    }
    for k in 0..KEYS {
        prop_assert_eq!(store.get::<u32>(&key(k)).unwrap(), model.live(k));
    }
    drop(fills);
    store.flush();
    prop_assert_eq!(
        store.stats().tags,
        0,
        "no tag outlives its entries and fills"
    );
    prop_assert_eq!(store.bytes(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn store_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
