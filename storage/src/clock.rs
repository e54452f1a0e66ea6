//! The store's notion of time, in milliseconds, and how far a reading may
//! lag the time it stands for.
//!
//! The default clock reads the kernel's coarse monotonic clock because every
//! hit on an entry with a TTL reads it. On Linux the read calls the vDSO's
//! `clock_gettime` directly (resolved once), skipping the C library's
//! wrapper; where the vDSO cannot be found (static builds, valgrind) it
//! calls the C library. Elsewhere it reads [`std::time::Instant`].
//!
//! A coarse reading is the time of the kernel's last timekeeping update,
//! which accumulates whole tick intervals: at an update it is up to one tick
//! behind `CLOCK_MONOTONIC`, and one tick later, just before the next
//! update, up to two, plus however late the tick's interrupt arrives
//! (measured on a loaded 2-vCPU VM with a 4 ms tick: 3 to 8.1 ms behind).
//! [`Clock::max_lag_ms`] allows three ticks (the resolution
//! `clock_getres` reports) rounded up to whole milliseconds, and the store's
//! hit path treats an entry as expired that much early, so a hit does not
//! return an entry whose TTL has passed on the precise clock unless the
//! kernel's tick is more than a tick late. Tests use [`ManualClock`] to move
//! time by hand, with a lag of their choice.

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

    /// How many milliseconds the time a reading stands for may be ahead of
    /// [`Clock::now_ms`]: three ticks of the coarse clock rounded up (which
    /// also covers the truncation to milliseconds), 0 for a clock read
    /// exactly.
    ///
    /// ```
    /// use hydracache_storage::{Clock, ManualClock};
    /// use std::time::Duration;
    ///
    /// assert_eq!(Clock::Manual(ManualClock::new()).max_lag_ms(), 0);
    /// let coarse = ManualClock::with_lag(Duration::from_millis(12));
    /// assert_eq!(Clock::Manual(coarse).max_lag_ms(), 12);
    /// ```
    pub fn max_lag_ms(&self) -> u64 {
        match self {
            Clock::Monotonic => monotonic_lag_ms(),
            Clock::Manual(m) => m.lag_ms,
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
pub struct ManualClock {
    now: Arc<AtomicU64>,
    lag_ms: u64,
}

impl ManualClock {
    /// A clock at time zero whose readings are exact (a lag of 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock at time zero that stands for a coarse clock: its readings
    /// may lag the time they stand for by up to `lag` (rounded up to whole
    /// milliseconds), so a store using it expires entries that early on
    /// hits.
    pub fn with_lag(lag: Duration) -> Self {
        Self {
            now: Arc::default(),
            lag_ms: ceil_ms(lag),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(
            by.as_millis().min(u64::MAX as u128) as u64,
            Ordering::SeqCst,
        );
    }

    /// The current reading in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

fn ceil_ms(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000).min(u64::MAX as u128) as u64
}

#[cfg(target_os = "linux")]
mod coarse {
    use std::ffi::CStr;
    use std::sync::atomic::{AtomicPtr, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;

    /// The resolved `clock_gettime`; null until the first read. Relaxed is
    /// enough: the pointer is to code mapped before the process started
    /// (the vDSO) or linked into it (the C library), so no other memory is
    /// published with it, and two threads resolving at once store the same
    /// value.
    static READ: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());

    /// The kernel's own entry point, which the C library's `clock_gettime`
    /// calls after its checks; the C library's function when the vDSO is
    /// not loaded (static binaries, valgrind, which hides it).
    fn resolve() -> ClockGettime {
        // The symbol's name in the vDSO of x86-64 / i386 / riscv, then arm64.
        const NAMES: [&CStr; 2] = [c"__vdso_clock_gettime", c"__kernel_clock_gettime"];
        // SAFETY: dlopen with RTLD_NOLOAD only looks the already-mapped vDSO
        // up (glibc registers it under this name) and returns null if it is
        // not there; the handle is kept for the life of the process (the
        // vDSO is never unmapped). dlsym's result is the vDSO's
        // clock_gettime, whose signature is the C library's.
        unsafe {
            let handle = libc::dlopen(
                c"linux-vdso.so.1".as_ptr(),
                libc::RTLD_LAZY | libc::RTLD_LOCAL | libc::RTLD_NOLOAD,
            );
            if !handle.is_null() {
                for name in NAMES {
                    let f = libc::dlsym(handle, name.as_ptr());
                    if !f.is_null() {
                        return std::mem::transmute::<*mut libc::c_void, ClockGettime>(f);
                    }
                }
            }
        }
        libc::clock_gettime
    }

    #[inline]
    fn read() -> ClockGettime {
        let f = READ.load(Ordering::Relaxed);
        if f.is_null() {
            let f = resolve();
            READ.store(f as *mut (), Ordering::Relaxed);
            f
        } else {
            // SAFETY: only `resolve`'s results are stored in READ.
            unsafe { std::mem::transmute::<*mut (), ClockGettime>(f) }
        }
    }

    #[inline]
    pub(super) fn now_ms() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC_COARSE is
        // always available on Linux >= 2.6.32, so the call cannot fail.
        unsafe { read()(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
    }

    /// Three ticks of the coarse clock, rounded up to whole milliseconds.
    pub(super) fn lag_ms() -> u64 {
        static LAG: OnceLock<u64> = OnceLock::new();
        *LAG.get_or_init(|| {
            let mut res = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `res` is a valid out-pointer.
            let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
            // Without an answer, assume a 100 Hz kernel: the coarsest tick
            // Linux configures (10 ms).
            let tick = if rc == 0 {
                Duration::new(res.tv_sec as u64, res.tv_nsec as u32)
            } else {
                Duration::from_millis(10)
            };
            super::ceil_ms(tick * 3)
        })
    }
}

#[cfg(target_os = "linux")]
#[inline]
fn monotonic_ms() -> u64 {
    coarse::now_ms()
}

/// Lag of a Linux coarse reading (see the module's documentation). A
/// reading `c` stands for a time below `c + lag`, so in whole milliseconds
/// at most `now_ms() + ceil(lag)`.
#[cfg(target_os = "linux")]
fn monotonic_lag_ms() -> u64 {
    coarse::lag_ms()
}

#[cfg(not(target_os = "linux"))]
#[inline]
fn monotonic_ms() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// `Instant` is read exactly; truncating it to milliseconds is what
/// "expires at millisecond n" means, so there is no lag to allow for.
#[cfg(not(target_os = "linux"))]
fn monotonic_lag_ms() -> u64 {
    0
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

    #[test]
    fn a_coarse_reading_is_not_behind_the_precise_clock_by_more_than_its_lag() {
        let c = Clock::Monotonic;
        let lag = c.max_lag_ms();
        for _ in 0..10_000 {
            // Precise first: a delay between the two reads only moves the
            // coarse reading forward.
            let precise = precise_ms_now();
            let coarse = c.now_ms();
            assert!(
                precise <= coarse + lag,
                "precise {precise} coarse {coarse} lag {lag}"
            );
        }
    }

    #[cfg(target_os = "linux")]
    fn precise_ms_now() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
    }

    #[cfg(not(target_os = "linux"))]
    fn precise_ms_now() -> u64 {
        Clock::Monotonic.now_ms()
    }

    #[test]
    fn the_lag_rounds_up_to_whole_milliseconds() {
        assert_eq!(ManualClock::with_lag(Duration::from_micros(1)).lag_ms, 1);
        assert_eq!(ManualClock::with_lag(Duration::from_millis(4)).lag_ms, 4);
        assert_eq!(ManualClock::with_lag(Duration::ZERO).lag_ms, 0);
        assert!(Clock::Monotonic.max_lag_ms() >= u64::from(cfg!(target_os = "linux")));
    }
}
