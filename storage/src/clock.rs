//! The store's notion of time, in milliseconds.
//!
//! The default clock reads the kernel's coarse monotonic clock (a few
//! nanoseconds, millisecond-ish resolution) because every hit on an entry
//! with a TTL reads it. Tests use [`ManualClock`] to move time by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Source of the current time for expiry decisions.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The process's monotonic clock (coarse resolution, cheap to read).
    #[default]
    Monotonic,
    /// A clock that only moves when told to.
    Manual(ManualClock),
}

impl Clock {
    /// Current time in milliseconds since an arbitrary fixed origin.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::Monotonic => monotonic_ms(),
            Clock::Manual(m) => m.now_ms(),
        }
    }
}

/// A hand-driven clock for tests and simulations.
///
/// ```
/// use hydracache_storage::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let manual = ManualClock::new();
/// let clock = Clock::Manual(manual.clone());
/// manual.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now_ms(), 1500);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(
            by.as_millis().min(u64::MAX as u128) as u64,
            Ordering::SeqCst,
        );
    }

    /// The current reading in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(target_os = "linux")]
#[inline]
fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC_COARSE is always
    // available on Linux >= 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

#[cfg(not(target_os = "linux"))]
#[inline]
fn monotonic_ms() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_back() {
        let c = Clock::Monotonic;
        let a = c.now_ms();
        std::thread::sleep(Duration::from_millis(20));
        let b = c.now_ms();
        assert!(b > a, "{b} > {a}");
    }
}
