//! The cost the async layer adds: `get` hit, `get_or_load` hit and
//! `get_or_load` miss through `Grid`, against moka::future and the storage
//! crate directly, in one criterion run.
//!
//! `cargo bench -p hydracache --bench async_api`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures_util::FutureExt;
use hydracache::{CacheOptions, Grid};
use hydracache_storage::{Expiry, StoreConfig};

type Value = [u8; 64];
const KEYS: usize = 10_000;

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("key:{i:08}")).collect()
}

fn bench(c: &mut Criterion) {
    // A current-thread runtime: the spawned load runs on the thread that
    // waits for it, as it does on a busy multi-thread worker.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = keys();
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(3600))
        .tags(["tenant:1", "all"]);

    let grid = rt.block_on(async {
        let grid = Grid::local().build();
        for k in &keys {
            grid.put(k, [1u8; 64], opts.clone()).await.unwrap();
        }
        grid
    });
    let store = StoreConfig::new().build();
    for k in &keys {
        store
            .insert(
                k.as_bytes(),
                &[1u8; 64],
                Expiry::After(Duration::from_secs(3600)),
                &["tenant:1", "all"],
            )
            .unwrap();
    }
    let moka: moka::future::Cache<String, Value> = moka::future::Cache::builder()
        .max_capacity(KEYS as u64 * 2)
        .time_to_live(Duration::from_secs(3600))
        .build();
    rt.block_on(async {
        for k in &keys {
            moka.insert(k.clone(), [1u8; 64]).await;
        }
    });

    let mut g = c.benchmark_group("hit");
    let mut i = 0usize;
    let mut next = move || {
        i = (i + 7919) % KEYS;
        i
    };
    g.bench_function("storage get (sync)", |b| {
        b.iter(|| {
            store
                .get::<Value>(keys[next()].as_bytes())
                .unwrap()
                .unwrap()[0]
        })
    });
    g.bench_function("grid get", |b| {
        b.iter(|| {
            grid.get::<Value>(&keys[next()])
                .now_or_never()
                .unwrap()
                .unwrap()
                .unwrap()[0]
        })
    });
    g.bench_function("grid get_or_load hit", |b| {
        b.iter(|| {
            grid.get_or_load(&keys[next()], CacheOptions::new(), || async {
                Ok::<Value, std::io::Error>([0; 64])
            })
            .now_or_never()
            .unwrap()
            .unwrap()[0]
        })
    });
    g.bench_function("moka::future get", |b| {
        b.iter(|| {
            let k = &keys[next()];
            match moka.get(k).now_or_never() {
                Some(v) => v.unwrap()[0],
                None => rt.block_on(moka.get(k)).unwrap()[0],
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("miss");
    let mut n = 0u64;
    g.bench_function("grid get_or_load miss (load + store)", |b| {
        b.iter_batched(
            || {
                n += 1;
                format!("miss:{n}")
            },
            |key| {
                rt.block_on(
                    grid.get_or_load(&key, CacheOptions::new().tag("m"), || async {
                        Ok::<Value, std::io::Error>([2; 64])
                    }),
                )
                .unwrap()[0]
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("moka::future get_with miss", |b| {
        b.iter_batched(
            || {
                n += 1;
                format!("miss:{n}")
            },
            |key| rt.block_on(moka.get_with(key, async { [2u8; 64] }))[0],
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
