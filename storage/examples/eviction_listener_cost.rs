//! What the eviction listener costs a write that evicts: 200,000 puts of
//! distinct keys into a store with room for a few thousand, so nearly every
//! put evicts one entry. Run it under callgrind and compare instruction
//! counts across the three modes (docs/benchmarks.md):
//!
//! ```sh
//! cargo build --release -p hydracache-storage --example eviction_listener_cost
//! for mode in none muted on; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/eviction_listener_cost $mode
//! done
//! ```
//!
//! - `none`: no listener installed;
//! - `muted`: a listener whose `is_listening` answers no (a grid with no
//!   eviction subscriber);
//! - `on`: a listener that counts every report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hydracache_storage::{EvictionCause, EvictionListener, Expiry, StoreConfig, NO_TAGS};

struct Counter {
    listening: bool,
    heard: AtomicU64,
}

impl EvictionListener for Counter {
    fn is_listening(&self) -> bool {
        self.listening
    }

    fn on_eviction(&self, _: &[u8], _: EvictionCause) {
        self.heard.fetch_add(1, Ordering::Relaxed);
    }
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "none".into());
    let listener = match mode.as_str() {
        "none" => None,
        "muted" | "on" => Some(Arc::new(Counter {
            listening: mode == "on",
            heard: AtomicU64::new(0),
        })),
        other => {
            eprintln!("unknown mode {other:?}: use none, muted or on");
            std::process::exit(2);
        }
    };
    let mut config = StoreConfig::new().capacity_bytes(1 << 20).shards(4);
    if let Some(listener) = &listener {
        config = config.eviction_listener(listener.clone());
    }
    let store = config.build();
    let value = [7u8; 64];
    for i in 0..200_000u64 {
        store
            .insert(&i.to_le_bytes(), &value, Expiry::Never, NO_TAGS)
            .unwrap();
    }
    let heard = listener.map_or(0, |l| l.heard.load(Ordering::Relaxed));
    println!(
        "{mode}: {} evicted for capacity, {heard} reported",
        store.stats().evicted_capacity
    );
}
