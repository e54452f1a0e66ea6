//! Memory accounting against the real allocator: the per-entry overhead the
//! store charges is not less than what it allocates, and tag bookkeeping is
//! bounded by the capacity, not by the number of writes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use hydracache_storage::{Expiry, Store, StoreConfig, ENTRY_OVERHEAD, NO_TAGS};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Both scenarios in one test so nothing else allocates concurrently.
#[test]
fn memory_is_bounded_and_the_overhead_charge_is_honest() {
    // 1. Per-entry overhead: 100,000 entries, 16-byte keys, 64-byte values.
    let n = 100_000usize;
    let value = [7u8; 64];
    let archived_len = hydracache_storage::encode(&value).unwrap().len();
    let before = live();
    let store = StoreConfig::new()
        .capacity_bytes(1 << 30)
        .shards(16)
        .build();
    for i in 0..n {
        let key = format!("key:{i:012}");
        store
            .insert(
                key.as_bytes(),
                &value,
                Expiry::After(Duration::from_secs(600)),
                NO_TAGS,
            )
            .unwrap();
    }
    let used = (live() - before) as usize;
    let per_entry = used / n;
    let overhead = per_entry - 16 - archived_len;
    println!(
        "heap per entry {per_entry} B = key 16 + value {archived_len} + overhead {overhead} B \
         (charged overhead: {} B incl. 32 B header; constant ENTRY_OVERHEAD = {ENTRY_OVERHEAD})",
        Store::charge_for(0, 0, 16, archived_len) - 16 - archived_len
    );
    assert!(
        overhead <= Store::charge_for(0, 0, 16, archived_len) - 16 - archived_len,
        "the capacity charge understates the real overhead ({overhead} B)"
    );
    // What the layout costs today (header 32, index slots 11 to 16, sketch
    // 8 to 16 at this size): a regression guard against bookkeeping that
    // grows per entry.
    assert!(
        overhead <= 62,
        "{overhead} B per entry beyond key and value"
    );
    drop(store);

    // 2. 1,000,000 puts of distinct keys with 2 tags each into a store that
    //    holds ~30,000 entries: memory ends bounded by the capacity.
    let per = Store::charge_for(2, 19, 20, archived_len);
    let capacity = per * 30_000;
    let base = live();
    let store = StoreConfig::new().capacity_bytes(capacity).build();
    let mut peak = 0isize;
    for i in 0..1_000_000u64 {
        let key = format!("user:{i:015}");
        let own = format!("user:{i}");
        let page = format!("page:{}", i / 100);
        store
            .insert(
                key.as_bytes(),
                &value,
                Expiry::Default,
                &[own.as_str(), page.as_str()],
            )
            .unwrap();
        if i % 50_000 == 0 {
            peak = peak.max(live() - base);
        }
    }
    let end = live() - base;
    let s = store.stats();
    println!(
        "after 1,000,000 tagged puts: {} entries, {} tags, charged {} B of {capacity} B, heap {end} B \
         (peak sampled {peak} B, {:.2}x capacity)",
        s.entries,
        s.tags,
        s.bytes,
        end as f64 / capacity as f64
    );
    assert!((28_000..=30_000).contains(&s.entries), "{s:?}");
    assert!(
        s.tags <= 2 * s.entries,
        "tags are bounded by entries: {s:?}"
    );
    assert!(
        end < (capacity as isize) * 3 / 2,
        "heap {end} B is bounded by the capacity {capacity} B"
    );
    assert!(peak < (capacity as isize) * 3 / 2, "peak {peak} B");
    drop(store);

    // 3. Evicted blocks are handed to reclamation at once, not parked until
    //    a thread's batch of retired entries fills: 40 values of 15 MiB
    //    through a 64 MiB store keep the heap near the capacity.
    let base = live();
    let capacity = 64 << 20;
    let store = StoreConfig::new().capacity_bytes(capacity).build();
    let big = vec![1u8; 15 << 20];
    for i in 0..40u32 {
        store
            .insert(format!("big{i}").as_bytes(), &big, Expiry::Default, NO_TAGS)
            .unwrap();
    }
    let held = live() - base;
    println!("40 x 15 MiB through a 64 MiB store: heap {held} B");
    assert!(
        held < (capacity as isize) * 3 / 2,
        "heap {held} B for a {capacity} B store"
    );
    drop(store);

    // 4. The same for replaced values: one key overwritten 40 times with
    //    15 MiB each, in a store with room for it, never evicts; the
    //    replaced blocks are still handed to reclamation at once.
    let base = live();
    let store = StoreConfig::new().capacity_bytes(capacity).build();
    for i in 0..40u8 {
        let value = vec![i; 15 << 20];
        store
            .insert(b"big", &value, Expiry::Default, NO_TAGS)
            .unwrap();
    }
    let held = live() - base;
    println!("one key overwritten 40 x with 15 MiB: heap {held} B");
    assert!(
        held < 3 * (15 << 20),
        "heap {held} B holds replaced values back"
    );
    drop(store);
}
