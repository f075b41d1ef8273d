//! The coverage check: did the kernel sample the targets as often as their own CPU time says
//! it should? Each thread's time on CPU (`/proc/PID/task/TID/schedstat`, first field, ns) is
//! read when sampling starts and when it stops; at `--frequency` Hz the software CPU clock
//! fires every `1e9 / Hz` ns of CPU time, so a thread that ran `t` ns should have
//! `t × Hz / 1e9` samples. A sampler that misses ticks (throttling, a program that bails out,
//! records dropped before they are counted) shows up as a shortfall here even when every
//! counter says nothing was lost.
//!
//! Only threads alive at both readings are compared, samples and CPU time alike: the CPU time
//! of a thread that exits in between can no longer be read, and a thread born in between has
//! no first reading. They are counted as left out.
use std::collections::HashMap;

use super::RawSample;
use crate::model::Coverage;

/// Below this share of the expected samples the summary warns.
pub const WARN_BELOW_PERCENT: f64 = 90.0;

/// CPU time of every thread of some processes at one moment.
#[derive(Clone, Debug, Default)]
pub struct CpuTimes {
    /// CLOCK_BOOTTIME just before the first thread was read (start) or just after the last
    /// (end): samples outside the span between the two readings are not compared.
    pub at_ns: u64,
    /// tid → (pid, ns on CPU).
    pub threads: HashMap<u32, (u32, u64)>,
}

/// Reads the CPU time of every thread of `pids`; a process or thread that is gone, or whose
/// schedstat cannot be read (a kernel without CONFIG_SCHEDSTATS still has the file), is skipped.
pub fn read(pids: impl IntoIterator<Item = u32>, at_ns: u64) -> CpuTimes {
    let mut threads = HashMap::new();
    for pid in pids {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(ns) = std::fs::read_to_string(entry.path().join("schedstat"))
                .ok()
                .as_deref()
                .and_then(parse_schedstat)
            {
                threads.insert(tid, (pid, ns));
            }
        }
    }
    CpuTimes { at_ns, threads }
}

/// The first field of a schedstat line: nanoseconds spent on CPU.
pub fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// Compares the samples of the threads that lived through with their CPU time.
pub fn compare(
    start: &CpuTimes,
    end: &CpuTimes,
    samples: &[RawSample],
    frequency_hz: u64,
) -> Coverage {
    // The same thread at both readings: same tid in the same process, CPU time not going
    // backwards (a tid reused by another thread in between would most likely have less).
    let mut through: HashMap<u32, u64> = HashMap::new();
    for (tid, &(pid, begin)) in &start.threads {
        if let Some(&(end_pid, finish)) = end.threads.get(tid)
            && end_pid == pid
            && finish >= begin
        {
            through.insert(*tid, finish - begin);
        }
    }
    let all: std::collections::HashSet<u32> = start
        .threads
        .keys()
        .chain(end.threads.keys())
        .copied()
        .collect();
    let cpu_ns: u64 = through.values().fold(0u64, |a, &b| a.saturating_add(b));
    let sampled = samples
        .iter()
        .filter(|s| {
            s.timestamp_ns >= start.at_ns
                && s.timestamp_ns <= end.at_ns
                && through.contains_key(&s.tid)
        })
        .count() as u64;
    // The kernel turns a frequency on the CPU clock into a fixed period of 1e9 / Hz ns.
    let period = 1_000_000_000 / frequency_hz.max(1);
    Coverage {
        cpu_ns,
        sampled,
        expected: cpu_ns / period.max(1),
        threads: through.len() as u32,
        threads_left_out: all.len().saturating_sub(through.len()) as u32,
    }
}

/// "sampled N% of expected", None when nothing could be expected (no CPU time).
pub fn percent(c: &Coverage) -> Option<f64> {
    (c.expected > 0).then(|| c.sampled as f64 * 100.0 / c.expected as f64)
}

/// The warning for a shortfall, if any.
pub fn warning(c: &Coverage) -> Option<String> {
    let p = percent(c)?;
    (p < WARN_BELOW_PERCENT).then(|| {
        format!(
            "sampled {p:.0}% of expected: {} samples for {:.2} s on CPU of {} thread(s) alive throughout, {} expected; the sampling clock missed ticks that no loss counter shows: check `dmesg` for perf interrupt throttling (kernel.perf_cpu_time_max_percent), or a hypervisor delaying timers",
            c.sampled,
            c.cpu_ns as f64 / 1e9,
            c.threads,
            c.expected
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::RawStack;

    fn times(at_ns: u64, threads: &[(u32, u32, u64)]) -> CpuTimes {
        CpuTimes {
            at_ns,
            threads: threads
                .iter()
                .map(|&(tid, pid, ns)| (tid, (pid, ns)))
                .collect(),
        }
    }

    fn sample(tid: u32, timestamp_ns: u64) -> RawSample {
        RawSample {
            timestamp_ns,
            pid: 1,
            tid,
            cpu: 0,
            user: RawStack::Empty,
            kernel: RawStack::Empty,
            span_id: 0,
            space: 0,
            truncated: false,
        }
    }

    #[test]
    fn parses_schedstat() {
        assert_eq!(
            parse_schedstat("2470114069 12345 67\n"),
            Some(2_470_114_069)
        );
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn compares_threads_that_lived_through_only() {
        // 100 Hz: one sample per 10 ms of CPU. Thread 10 ran 1 s (100 expected, 95
        // sampled); 11 exited, 12 was born: both left out with their samples.
        let start = times(1_000, &[(10, 1, 5_000_000_000), (11, 1, 0)]);
        let end = times(2_000_000_000, &[(10, 1, 6_000_000_000), (12, 1, 7)]);
        let mut samples: Vec<RawSample> = (0..95).map(|i| sample(10, 2_000 + i)).collect();
        samples.extend((0..30).map(|i| sample(11, 2_000 + i)));
        samples.extend((0..30).map(|i| sample(12, 2_000 + i)));
        // Outside the readings: not compared.
        samples.push(sample(10, 500));
        samples.push(sample(10, 3_000_000_000));
        let c = compare(&start, &end, &samples, 100);
        assert_eq!((c.cpu_ns, c.expected, c.sampled), (1_000_000_000, 100, 95));
        assert_eq!((c.threads, c.threads_left_out), (1, 2));
        assert_eq!(percent(&c), Some(95.0));
        assert!(warning(&c).is_none());
    }

    #[test]
    fn a_shortfall_warns_and_nothing_to_expect_does_not() {
        let start = times(0, &[(10, 1, 0)]);
        let end = times(100, &[(10, 1, 1_000_000_000)]);
        let samples: Vec<RawSample> = (0..50).map(|i| sample(10, i)).collect();
        let c = compare(&start, &end, &samples, 99);
        assert_eq!(c.expected, 99);
        let w = warning(&c).expect("50 of 99 warns");
        assert!(w.starts_with("sampled 51% of expected"), "{w}");
        // An idle target: no percentage, no warning.
        let c = compare(&start, &start, &[], 99);
        assert_eq!((percent(&c), warning(&c)), (None, None));
        // A tid whose CPU time went backwards is another thread: left out.
        let c = compare(&end, &times(20, &[(10, 1, 5)]), &samples, 99);
        assert_eq!((c.threads, c.threads_left_out), (0, 1));
        // Frequency 0 from a damaged caller does not divide by zero.
        let c = compare(&start, &end, &samples, 0);
        assert_eq!(c.expected, 1);
    }
}
