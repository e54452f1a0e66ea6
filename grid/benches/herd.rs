//! A herd on one cold key: five members in one process, 1,000 callers
//! (200 on each member) call `get_or_load` for the same key at once with a
//! 50 ms loader. Prints how many times the loader ran in the grid (it must
//! run once) and the time from the first call until the last caller has its
//! value, against the loader's own 50 ms and against the same herd on one
//! `Grid::local()` (single flight inside one process), measured in the same
//! run. A new key each round; medians of the rounds.
//!
//! `cargo bench -p hydracache --features cluster --bench herd`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hydracache::cluster::DevCa;
use hydracache::{CacheOptions, Grid};

mod grid_support;
use grid_support::{load_average, median, members};

const MEMBERS: usize = 5;
const CALLERS: usize = 1000;
const LOADER: Duration = Duration::from_millis(50);
const ROUNDS: usize = 9;

/// One herd on `key` spread over `nodes`: the loader runs and the time
/// until the last of `CALLERS` callers has the value.
async fn herd(nodes: &[Grid], key: &str) -> (usize, Duration) {
    let runs = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (g, key, runs) = (
                nodes[i % nodes.len()].clone(),
                key.to_string(),
                runs.clone(),
            );
            tokio::spawn(async move {
                g.get_or_load(&key, CacheOptions::new(), move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(LOADER).await; // a slow query
                    Ok::<_, std::io::Error>(42u64)
                })
                .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 42);
    }
    (runs.load(Ordering::SeqCst), start.elapsed())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ca = DevCa::new("orders").unwrap();
        let grid = members(&ca, MEMBERS).await;
        let local = [Grid::local().build()];
        println!(
            "herd: {CALLERS} callers, one cold key, {LOADER:?} loader, {ROUNDS} rounds \
             (load average {})",
            load_average()
        );
        let (mut grid_times, mut local_times) = (Vec::new(), Vec::new());
        let (mut grid_loads, mut local_loads) = (Vec::new(), Vec::new());
        // Interleaved, so both subjects see the same machine.
        for round in 0..ROUNDS {
            let (loads, t) = herd(&grid, &format!("herd:{round}")).await;
            grid_loads.push(loads);
            grid_times.push(t);
            let (loads, t) = herd(&local, &format!("herd:{round}")).await;
            local_loads.push(loads);
            local_times.push(t);
        }
        let row = |name: &str, loads: &[usize], times: &[Duration]| {
            let (lo, hi) = (times.iter().min().unwrap(), times.iter().max().unwrap());
            let m = median(times);
            println!(
                "{name:<40} loads/round {:?}  last caller: median {:>8.1?} ({:.2}x the loader)  \
                 min {lo:>8.1?}  max {hi:>8.1?}",
                loads,
                m,
                m.as_secs_f64() / LOADER.as_secs_f64()
            );
            m
        };
        let g = row(
            &format!("{MEMBERS} members x {} callers", CALLERS / MEMBERS),
            &grid_loads,
            &grid_times,
        );
        let l = row("Grid::local(), 1,000 callers", &local_loads, &local_times);
        println!(
            "\ngrid herd / loader: {:.2}x; grid herd / local herd: {:.2}x; \
             loads per round in the grid: {} (must be 1); load average {}",
            g.as_secs_f64() / LOADER.as_secs_f64(),
            g.as_secs_f64() / l.as_secs_f64(),
            if grid_loads.iter().all(|&n| n == 1) {
                "1"
            } else {
                "NOT 1"
            },
            load_average()
        );
        assert!(
            grid_loads.iter().all(|&n| n == 1),
            "one load per key in the grid"
        );
    });
}
