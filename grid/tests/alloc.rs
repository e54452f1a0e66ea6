//! A hit allocates nothing beyond the returned value.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use hydracache::{CacheOptions, Grid};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn hits_allocate_nothing_for_values_that_own_no_heap() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let grid = rt.block_on(async {
        let grid = Grid::local().build();
        let opts = CacheOptions::new()
            .tags(["a", "b"])
            .ttl(Duration::from_secs(60));
        grid.put("k", [7u64; 8], opts).await.unwrap();
        grid
    });
    // Warm up thread-locals (stat stripes, epoch reservation).
    let _ = grid.get::<[u64; 8]>("k").now_or_never();
    let before = ALLOCS.load(Ordering::SeqCst);
    for _ in 0..1000 {
        let v = grid
            .get::<[u64; 8]>("k")
            .now_or_never()
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(v[0], 7);
        let v: [u64; 8] = grid
            .get_or_load("k", CacheOptions::new(), || async {
                Ok::<_, std::io::Error>([0; 8])
            })
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(v[0], 7);
    }
    assert_eq!(
        ALLOCS.load(Ordering::SeqCst) - before,
        0,
        "2000 hits allocated"
    );
}
