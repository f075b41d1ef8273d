//! Rust twin of split.c: 70% of CPU time in `hot_a`, 30% in `hot_b`, split by thread CPU time.
//! Usage: rust-split [seconds]. Prints "ready <pid>" once running.
//!
//! The clock is read rarely (every 200k iterations): glibc's clock_gettime has no frame pointer,
//! so a sample inside it loses its caller to a frame-pointer walk.
use std::hint::black_box;
use std::time::{Duration, Instant};

fn thread_cpu_time() -> Duration {
    let mut ts = std::mem::MaybeUninit::<[i64; 2]>::uninit();
    // SAFETY: clock_gettime writes a struct timespec (two 64-bit fields on x86_64 Linux).
    unsafe { clock_gettime(3 /* CLOCK_THREAD_CPUTIME_ID */, ts.as_mut_ptr()) };
    // SAFETY: initialized by the call above.
    let [s, ns] = unsafe { ts.assume_init() };
    Duration::new(s as u64, ns as u32)
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut [i64; 2]) -> i32;
}

#[inline(never)]
fn hot_a(budget: Duration) {
    let end = thread_cpu_time() + budget;
    let mut x: u64 = black_box(1);
    while thread_cpu_time() < end {
        for _ in 0..200_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        }
    }
    black_box(x);
}

#[inline(never)]
fn hot_b(budget: Duration) {
    let end = thread_cpu_time() + budget;
    let mut x: u64 = black_box(2);
    while thread_cpu_time() < end {
        for _ in 0..200_000 {
            x = x.wrapping_mul(2862933555777941757).wrapping_add(3037000493);
        }
    }
    black_box(x);
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(30.0);
    let stop = Instant::now() + Duration::from_secs_f64(secs);
    println!("ready {}", std::process::id());
    // The cycle length varies pseudo-randomly (5-15 ms): a fixed cycle would phase-lock with
    // the sampling period and bias the measured split.
    let mut seed: u64 = 12345;
    while Instant::now() < stop {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let cycle = 0.005 + 0.010 * (seed >> 11) as f64 / (1u64 << 53) as f64;
        hot_a(Duration::from_secs_f64(0.7 * cycle));
        hot_b(Duration::from_secs_f64(0.3 * cycle));
    }
}
