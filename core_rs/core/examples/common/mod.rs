//! What the profiling examples share: a per-thread CPU clock.

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// This thread's CPU time in seconds: stable on a machine shared with other jobs.
pub fn cpu_now() -> f64 {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec (64-bit Linux layout).
    unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    #[allow(clippy::cast_precision_loss)]
    let t = ts.sec as f64 + ts.nsec as f64 * 1e-9;
    t
}
