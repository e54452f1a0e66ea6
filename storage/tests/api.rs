//! The store's guarantees, one test each.

use std::time::Duration;

use hydracache_storage::{
    Clock, Expiry, FillOutcome, ManualClock, Store, StoreConfig, StoreError, NO_TAGS,
};
use rkyv::{Archive, Deserialize, Serialize};

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct User {
    id: u64,
    name: String,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Other {
    a: Vec<String>,
    b: u8,
}

fn manual() -> (Store, ManualClock) {
    let clock = ManualClock::new();
    let store = StoreConfig::new()
        .capacity_bytes(1 << 20)
        .clock(Clock::Manual(clock.clone()))
        .build();
    (store, clock)
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user-{id}"),
    }
}

#[test]
fn a_hit_returns_what_was_stored_and_a_put_replaces_it() {
    let store = Store::default();
    assert_eq!(store.get::<User>(b"u").unwrap(), None);
    store
        .insert(b"u", &user(1), Expiry::Default, NO_TAGS)
        .unwrap();
    assert_eq!(store.get::<User>(b"u").unwrap(), Some(user(1)));
    store
        .insert(b"u", &user(2), Expiry::Default, NO_TAGS)
        .unwrap();
    assert_eq!(store.get::<User>(b"u").unwrap(), Some(user(2)));
    assert_eq!(store.len(), 1);
    let s = store.stats();
    assert_eq!((s.hits, s.misses, s.inserts), (2, 1, 2));
}

#[test]
fn expired_entries_are_never_returned_and_contains_key_agrees() {
    let (store, clock) = manual();
    store
        .insert(
            b"k",
            &7u32,
            Expiry::After(Duration::from_millis(100)),
            NO_TAGS,
        )
        .unwrap();
    clock.advance(Duration::from_millis(99));
    assert!(store.contains_key(b"k"));
    assert_eq!(store.get::<u32>(b"k").unwrap(), Some(7));
    clock.advance(Duration::from_millis(1));
    assert!(!store.contains_key(b"k"));
    assert_eq!(store.get::<u32>(b"k").unwrap(), None);
    assert!(store.get_ref(b"k").is_none());
}

#[test]
fn a_hit_treats_an_entry_as_expired_as_early_as_the_clock_may_lag() {
    // A clock whose readings may lag real time by up to 4 ms, as a coarse
    // clock does.
    let clock = ManualClock::with_lag(Duration::from_millis(4));
    let store = StoreConfig::new()
        .clock(Clock::Manual(clock.clone()))
        .build();
    store
        .insert(
            b"k",
            &7u32,
            Expiry::After(Duration::from_millis(10)),
            NO_TAGS,
        )
        .unwrap();
    clock.advance(Duration::from_millis(5));
    // Reading 5 stands for at most 9: the entry (expiring at 10) is live.
    assert_eq!(store.get::<u32>(b"k").unwrap(), Some(7));
    assert_eq!(
        store.get_ref(b"k").unwrap().ttl_remaining(),
        Some(Duration::from_millis(5))
    );
    clock.advance(Duration::from_millis(1));
    // Reading 6 may stand for 10, when the entry has expired: not returned,
    // by any read.
    assert_eq!(store.get::<u32>(b"k").unwrap(), None);
    assert!(store.get_ref(b"k").is_none());
    assert!(!store.contains_key(b"k"));
    let stats = store.stats();
    assert_eq!((stats.hits, stats.misses), (2, 2));
    // The sweep goes by the reading itself; the entry goes once the
    // reading has passed its expiry.
    assert_eq!(store.sweep(16), 0);
    clock.advance(Duration::from_millis(4));
    assert_eq!(store.sweep(16), 1);
    assert_eq!(store.len(), 0);
}

#[test]
fn an_entry_whose_ttl_is_within_the_real_clocks_lag_is_never_hit() {
    let store = Store::default();
    let lag = store.clock().max_lag_ms();
    store
        .insert(
            b"short",
            &1u8,
            Expiry::After(Duration::from_millis(lag)),
            NO_TAGS,
        )
        .unwrap();
    store
        .insert(
            b"hour",
            &1u8,
            Expiry::After(Duration::from_secs(3600)),
            NO_TAGS,
        )
        .unwrap();
    // The reading cannot go back, so it plus the lag is at or past the
    // short entry's expiry on every read.
    assert_eq!(store.get::<u8>(b"short").unwrap(), None);
    assert!(!store.contains_key(b"short"));
    assert_eq!(store.get::<u8>(b"hour").unwrap(), Some(1));
}

#[test]
fn default_ttl_applies_unless_overridden() {
    let clock = ManualClock::new();
    let store = StoreConfig::new()
        .default_ttl(Duration::from_secs(10))
        .clock(Clock::Manual(clock.clone()))
        .build();
    store
        .insert(b"default", &1u8, Expiry::Default, NO_TAGS)
        .unwrap();
    store
        .insert(b"never", &1u8, Expiry::Never, NO_TAGS)
        .unwrap();
    store
        .insert(
            b"long",
            &1u8,
            Expiry::After(Duration::from_secs(60)),
            NO_TAGS,
        )
        .unwrap();
    clock.advance(Duration::from_secs(10));
    assert!(!store.contains_key(b"default"));
    assert!(store.contains_key(b"never"));
    assert!(store.contains_key(b"long"));
    assert_eq!(
        store.get_ref(b"long").unwrap().ttl_remaining(),
        Some(Duration::from_secs(50))
    );
    assert_eq!(store.get_ref(b"never").unwrap().ttl_remaining(), None);
}

#[test]
fn expired_memory_is_reclaimed_by_the_sweep_without_reads() {
    let (store, clock) = manual();
    for i in 0..1000u32 {
        let ttl = Duration::from_secs(if i % 2 == 0 { 1 } else { 100 });
        store
            .insert(format!("k{i}").as_bytes(), &i, Expiry::After(ttl), &["t"])
            .unwrap();
    }
    let before = store.stats();
    assert_eq!(before.entries, 1000);
    clock.advance(Duration::from_secs(2));
    let reclaimed = store.sweep(usize::MAX);
    assert_eq!(reclaimed, 500);
    let after = store.stats();
    assert_eq!(after.entries, 500);
    assert_eq!(after.evicted_expired, 500);
    assert!(after.bytes < before.bytes * 6 / 10, "{after:?}");
    assert_eq!(after.hits + after.misses, 0, "nobody read anything");
}

#[test]
fn writes_sweep_a_little_on_their_own() {
    let (store, clock) = manual();
    for i in 0..100u32 {
        store
            .insert(
                format!("old{i}").as_bytes(),
                &i,
                Expiry::After(Duration::from_secs(1)),
                NO_TAGS,
            )
            .unwrap();
    }
    clock.advance(Duration::from_secs(5));
    for i in 0..400u32 {
        store
            .insert(format!("new{i}").as_bytes(), &i, Expiry::Never, NO_TAGS)
            .unwrap();
    }
    let s = store.stats();
    assert_eq!(s.evicted_expired, 100, "{s:?}");
    assert_eq!(s.entries, 400);
}

#[test]
fn invalidating_a_tag_hides_every_entry_with_it_at_once() {
    let store = Store::default();
    for i in 0..100u64 {
        let tags: &[&str] = if i % 2 == 0 {
            &["users", "even"]
        } else {
            &["users"]
        };
        store
            .insert(
                format!("user:{i}").as_bytes(),
                &user(i),
                Expiry::Default,
                tags,
            )
            .unwrap();
    }
    store
        .insert(b"other", &1u32, Expiry::Default, &["misc"])
        .unwrap();
    assert!(store.invalidate_tag(b"even"));
    assert!(!store.contains_key(b"user:0"));
    assert!(store.contains_key(b"user:1"));
    assert!(!store.invalidate_tag(b"no-such-tag"));
    assert_eq!(store.invalidate_tags(&["users", "nothing"]), 1);
    for i in 0..100u64 {
        assert_eq!(
            store.get::<User>(format!("user:{i}").as_bytes()).unwrap(),
            None
        );
    }
    assert!(store.contains_key(b"other"));
    // A write after the invalidation is visible again.
    store
        .insert(b"user:1", &user(1), Expiry::Default, &["users"])
        .unwrap();
    assert!(store.contains_key(b"user:1"));
    // The hidden entries are reclaimed by the sweep, and the tags with them.
    store.sweep(usize::MAX);
    let s = store.stats();
    assert_eq!(s.entries, 2);
    // 99 reclaimed by the sweep; the hundredth was replaced by the new write.
    assert_eq!(s.evicted_invalidated, 99);
    assert_eq!(s.tags, 2, "only 'users' (user:1) and 'misc' remain");
}

#[test]
fn an_entry_read_before_an_invalidation_is_hidden_by_it() {
    // Reads record in the entry that its tags were current; an invalidation
    // of any tag since must still hide exactly the entries that carry it,
    // however often they were read before and after other invalidations.
    let store = Store::default();
    store.insert(b"a1", &1u32, Expiry::Default, &["a"]).unwrap();
    store
        .insert(b"a2", &2u32, Expiry::Default, &["a", "shared"])
        .unwrap();
    store
        .insert(b"b", &3u32, Expiry::Default, &["b", "shared"])
        .unwrap();
    store
        .insert(b"plain", &4u32, Expiry::Default, NO_TAGS)
        .unwrap();
    for _ in 0..3 {
        for key in [&b"a1"[..], b"a2", b"b", b"plain"] {
            assert!(store.get::<u32>(key).unwrap().is_some());
        }
    }
    assert!(store.invalidate_tag(b"b"));
    assert_eq!(store.get::<u32>(b"b").unwrap(), None);
    assert!(!store.contains_key(b"b"));
    for _ in 0..3 {
        assert_eq!(store.get::<u32>(b"a1").unwrap(), Some(1));
        assert_eq!(store.get::<u32>(b"a2").unwrap(), Some(2));
        assert!(store.get_ref(b"a1").is_some());
    }
    assert!(store.invalidate_tag(b"shared"));
    assert_eq!(store.get::<u32>(b"a2").unwrap(), None);
    assert!(store.get_ref(b"a2").is_none());
    assert_eq!(store.get::<u32>(b"a1").unwrap(), Some(1));
    assert!(store.invalidate_tag(b"a"));
    assert_eq!(store.get::<u32>(b"a1").unwrap(), None);
    assert!(!store.contains_key(b"a1"));
    assert_eq!(store.get::<u32>(b"plain").unwrap(), Some(4));
}

#[test]
fn remove_and_flush() {
    let store = Store::default();
    store.insert(b"a", &1u32, Expiry::Default, &["t"]).unwrap();
    store.insert(b"b", &2u32, Expiry::Default, &["t"]).unwrap();
    assert!(store.remove(b"a"));
    assert!(!store.remove(b"a"));
    assert!(!store.contains_key(b"a"));
    assert!(store.contains_key(b"b"));
    store.flush();
    assert!(store.is_empty());
    let s = store.stats();
    assert_eq!((s.entries, s.bytes, s.tags), (0, 0, 0));
    assert_eq!(s.evicted_invalidated, 2);
}

#[test]
fn bad_input_is_a_typed_error_and_loses_nothing() {
    let store = StoreConfig::new()
        .capacity_bytes(64 << 10)
        .max_entry_bytes(4 << 10)
        .max_key_len(16)
        .max_tags(2)
        .max_tag_len(8)
        .build();
    store
        .insert(b"keep", &1u32, Expiry::Default, &["t"])
        .unwrap();
    let before = store.stats();

    assert_eq!(
        store.insert(b"", &1u32, Expiry::Default, NO_TAGS),
        Err(StoreError::EmptyKey)
    );
    assert_eq!(
        store.insert(&[b'k'; 17], &1u32, Expiry::Default, NO_TAGS),
        Err(StoreError::KeyTooLong { len: 17, max: 16 })
    );
    let big = vec![0u8; 8 << 10];
    assert!(matches!(
        store.insert(b"keep", &big, Expiry::Default, NO_TAGS),
        Err(StoreError::EntryTooLarge { max: 4096, .. })
    ));
    assert_eq!(
        store.insert(b"keep", &2u32, Expiry::Default, &["a", "b", "c"]),
        Err(StoreError::TooManyTags { count: 3, max: 2 })
    );
    assert_eq!(
        store.insert(b"keep", &2u32, Expiry::Default, &["much-too-long"]),
        Err(StoreError::BadTag { len: 13, max: 8 })
    );
    assert_eq!(
        store.insert(b"keep", &2u32, Expiry::Default, &[""]),
        Err(StoreError::BadTag { len: 0, max: 8 })
    );
    assert!(store.begin_fill(b"", NO_TAGS).is_err());
    let ticket = store.begin_fill(b"keep", &["t"]).unwrap();
    assert!(matches!(
        store.complete_fill(ticket, &big, Expiry::Default),
        Err(StoreError::EntryTooLarge { .. })
    ));

    // Nothing stored, nothing lost, nothing leaked.
    assert_eq!(store.get::<u32>(b"keep").unwrap(), Some(1));
    let after = store.stats();
    assert_eq!(
        (after.entries, after.bytes, after.tags),
        (before.entries, before.bytes, before.tags)
    );
}

#[test]
fn an_entry_larger_than_the_capacity_is_refused() {
    let store = StoreConfig::new()
        .capacity_bytes(1000)
        .max_entry_bytes(1 << 20)
        .build();
    let err = store
        .insert(b"k", &vec![0u8; 2000], Expiry::Default, NO_TAGS)
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::EntryTooLarge {
            size: Store::charge_for(0, 0, 1, 2008),
            max: 1000
        }
    );
}

#[test]
fn a_value_read_as_the_wrong_type_is_an_error_and_is_dropped() {
    let store = Store::default();
    store
        .insert(b"k", &user(1), Expiry::Default, NO_TAGS)
        .unwrap();
    // Reading as another type validates (it is not the recorded type) and fails.
    let err = store.get::<Other>(b"k").unwrap_err();
    assert!(matches!(err, StoreError::Decode(_)), "{err}");
    assert!(!store.contains_key(b"k"), "the bad entry is gone");
}

#[test]
fn bytes_from_outside_are_validated_before_they_are_stored() {
    let store = Store::default();
    store
        .insert(b"k", &user(1), Expiry::Default, NO_TAGS)
        .unwrap();
    let garbage = [0xffu8; 3];
    assert!(matches!(
        store.insert_validated::<User>(b"k", &garbage, Expiry::Default, NO_TAGS),
        Err(StoreError::Decode(_))
    ));
    // A real archive whose string points outside the buffer.
    let long = User {
        id: 3,
        name: "a name long enough to be stored out of line".into(),
    };
    let mut corrupt = hydracache_storage::encode(&long).unwrap().to_vec();
    let n = corrupt.len();
    corrupt[n - 4..].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    assert!(matches!(
        store.insert_validated::<User>(b"k", &corrupt, Expiry::Default, NO_TAGS),
        Err(StoreError::Decode(_))
    ));
    assert_eq!(store.get::<User>(b"k").unwrap(), Some(user(1)));

    // Valid bytes at a misaligned address are accepted (validated on a copy).
    let good = hydracache_storage::encode(&user(2)).unwrap();
    let mut shifted = vec![0u8; good.len() + 1];
    shifted[1..].copy_from_slice(&good);
    store
        .insert_validated::<User>(b"k", &shifted[1..], Expiry::Default, NO_TAGS)
        .unwrap();
    assert_eq!(store.get::<User>(b"k").unwrap(), Some(user(2)));

    // Raw bytes of unknown type are validated on every typed read.
    store
        .insert_bytes(b"raw", &garbage, Expiry::Default, NO_TAGS)
        .unwrap();
    assert!(store.get::<User>(b"raw").is_err());
}

#[test]
fn zero_copy_reads_stay_valid_after_removal_and_share_bytes_without_copying() {
    let store = Store::default();
    store
        .insert(b"k", &user(9), Expiry::Default, &["t"])
        .unwrap();
    let entry = store.get_ref(b"k").unwrap();
    let bytes = entry.to_bytes();
    assert_eq!(
        bytes.as_ptr(),
        entry.bytes().as_ptr(),
        "Bytes shares the stored value"
    );
    assert_eq!(bytes.as_ptr() as usize % 16, 0);
    assert_eq!(entry.tags().collect::<Vec<_>>(), vec![&b"t"[..]]);
    store.remove(b"k");
    store.flush();
    // Still readable through the guard and the Bytes.
    assert_eq!(entry.archived::<User>().unwrap().name, "user-9");
    assert_eq!(entry.deserialize::<User>().unwrap(), user(9));
    drop(entry);
    let again = rkyv::from_bytes::<User, rkyv::rancor::Error>(&bytes).unwrap();
    assert_eq!(again, user(9));
}

#[test]
fn capacity_is_a_byte_bound_and_evictions_are_counted() {
    let cap = 64 << 10;
    let store = StoreConfig::new().capacity_bytes(cap).shards(4).build();
    for i in 0..10_000u64 {
        store
            .insert(
                format!("k{i}").as_bytes(),
                &vec![i; 8],
                Expiry::Default,
                &["t"],
            )
            .unwrap();
        assert!(store.bytes() <= cap);
    }
    let s = store.stats();
    assert!(s.evicted_capacity > 9000, "{s:?}");
    assert_eq!(s.entries + s.evicted_capacity, 10_000);
    assert!(
        s.bytes > cap as u64 * 9 / 10,
        "the store is used, not emptied: {s:?}"
    );
}

#[test]
fn s3_fifo_keeps_a_hot_set_through_a_scan() {
    let per = Store::charge_for(0, 0, 6, 8);
    let store = StoreConfig::new()
        .capacity_bytes(per * 1000)
        .shards(1)
        .build();
    for round in 0..3 {
        for i in 0..500u64 {
            let k = format!("hot{i:03}");
            if store.get::<u64>(k.as_bytes()).unwrap().is_none() {
                store
                    .insert(k.as_bytes(), &i, Expiry::Default, NO_TAGS)
                    .unwrap();
            }
        }
        let _ = round;
    }
    for i in 0..20_000u64 {
        store
            .insert(format!("s{i:05}").as_bytes(), &i, Expiry::Default, NO_TAGS)
            .unwrap();
    }
    let hot = (0..500u64)
        .filter(|i| store.contains_key(format!("hot{i:03}").as_bytes()))
        .count();
    assert!(hot >= 450, "only {hot} of 500 hot keys survived a 20x scan");
}

#[test]
fn fills_are_refused_after_anything_they_depend_on_changes() {
    let store = Store::default();
    // Untouched: stored.
    let t = store.begin_fill(b"k", &["a"]).unwrap();
    assert!(!t.is_stale());
    assert_eq!(
        store.complete_fill(t, &1u32, Expiry::Default).unwrap(),
        FillOutcome::Stored
    );
    assert_eq!(store.get::<u32>(b"k").unwrap(), Some(1));

    type Race = fn(&Store);
    let races: [(&str, Race); 5] = [
        ("tag", |s| {
            s.invalidate_tag(b"a");
        }),
        ("key", |s| {
            s.remove(b"k");
        }),
        ("put", |s| {
            s.insert(b"k", &9u32, Expiry::Default, NO_TAGS).unwrap()
        }),
        ("flush", |s| s.flush()),
        ("other fill", |s| {
            let t = s.begin_fill(b"k", NO_TAGS).unwrap();
            s.complete_fill(t, &8u32, Expiry::Default).unwrap();
        }),
    ];
    for (name, race) in races {
        let t = store.begin_fill(b"k", &["a"]).unwrap();
        race(&store);
        assert!(t.is_stale(), "{name}");
        assert_eq!(
            store.complete_fill(t, &2u32, Expiry::Default).unwrap(),
            FillOutcome::Stale,
            "{name}"
        );
        assert_ne!(store.get::<u32>(b"k").unwrap(), Some(2), "{name}");
    }
    // Unrelated changes do not make a fill stale.
    let t = store.begin_fill(b"k", &["a"]).unwrap();
    store.invalidate_tag(b"b");
    store.remove(b"other");
    store
        .insert(b"other", &1u32, Expiry::Default, &["c"])
        .unwrap();
    assert_eq!(
        store.complete_fill(t, &3u32, Expiry::Default).unwrap(),
        FillOutcome::Stored
    );
    assert_eq!(store.stats().stale_fills, 5);
}

#[test]
fn abandoned_fills_release_their_tags() {
    let store = Store::default();
    let t = store.begin_fill(b"k", &["x", "y"]).unwrap();
    assert_eq!(store.stats().tags, 2);
    drop(t);
    assert_eq!(store.stats().tags, 0);
    // A tag invalidated while only a fill held it still protects that fill.
    let t = store.begin_fill(b"k", &["x"]).unwrap();
    assert!(store.invalidate_tag(b"x"));
    assert_eq!(
        store.complete_fill(t, &1u8, Expiry::Default).unwrap(),
        FillOutcome::Stale
    );
    assert_eq!(store.stats().tags, 0);
}

#[test]
fn fills_of_outside_bytes_are_validated_or_marked_unknown() {
    let store = Store::default();
    let wild = [0xabu8; 8];
    let t = store.begin_fill(b"k", NO_TAGS).unwrap();
    assert!(matches!(
        store.complete_fill_archived::<Vec<u64>>(t, &wild, Expiry::Default),
        Err(StoreError::Decode(_))
    ));
    assert!(!store.contains_key(b"k"));
    // Unknown bytes are stored, and every typed read validates them.
    let t = store.begin_fill(b"k", NO_TAGS).unwrap();
    assert_eq!(
        store
            .complete_fill_bytes(t, &wild, Expiry::Default)
            .unwrap(),
        FillOutcome::Stored
    );
    assert!(matches!(
        store.get::<Vec<u64>>(b"k"),
        Err(StoreError::Decode(_))
    ));
    // Valid archived bytes are accepted and read back.
    let good = hydracache_storage::encode(&vec![1u64, 2]).unwrap();
    let t = store.begin_fill(b"k", NO_TAGS).unwrap();
    store
        .complete_fill_archived::<Vec<u64>>(t, &good, Expiry::Default)
        .unwrap();
    assert_eq!(store.get::<Vec<u64>>(b"k").unwrap(), Some(vec![1, 2]));
}

#[test]
fn hits_on_near_copies_are_counted_apart_until_an_owned_write_replaces_them() {
    let (store, _clock) = manual();
    store
        .insert(b"owned", &user(1), Expiry::Default, NO_TAGS)
        .unwrap();
    let ticket = store.begin_fill(b"copy", &["users"]).unwrap().near_copy();
    let archived = hydracache_storage::encode(&user(2)).unwrap();
    let outcome = store
        .complete_fill_archived::<User>(ticket, &archived, Expiry::Default)
        .unwrap();
    assert_eq!(outcome, FillOutcome::Stored);

    for _ in 0..3 {
        assert_eq!(store.get::<User>(b"owned").unwrap(), Some(user(1)));
        assert_eq!(store.get::<User>(b"copy").unwrap(), Some(user(2)));
        assert!(store.get_ref(b"copy").is_some());
    }
    assert_eq!(store.get::<User>(b"absent").unwrap(), None);
    let s = store.stats();
    assert_eq!((s.hits, s.near_hits, s.misses), (9, 6, 1), "{s:?}");

    // An owned write of the key replaces the copy: its hits are owned hits.
    store
        .insert(b"copy", &user(3), Expiry::Default, NO_TAGS)
        .unwrap();
    assert_eq!(store.get::<User>(b"copy").unwrap(), Some(user(3)));
    let s = store.stats();
    assert_eq!((s.hits, s.near_hits), (10, 6), "{s:?}");

    // A near-copy fill that went stale stores nothing and counts nothing.
    let ticket = store.begin_fill(b"late", NO_TAGS).unwrap().near_copy();
    store.remove(b"late");
    let outcome = store
        .complete_fill(ticket, &user(4), Expiry::Default)
        .unwrap();
    assert_eq!(outcome, FillOutcome::Stale);
    assert_eq!(store.get::<User>(b"late").unwrap(), None);
    assert_eq!(store.stats().near_hits, 6);
}
