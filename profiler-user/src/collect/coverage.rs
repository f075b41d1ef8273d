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
//! no first reading. They are counted as left out. A second, process-wide figure accounts for
//! them: `/proc/PID/stat` keeps the CPU time of a process's ended threads in its own, though
//! only to the clock tick (10 ms) and only for processes alive at both readings.
use std::collections::HashMap;

use super::RawSample;
use crate::model::Coverage;

/// Below this share of the expected samples the summary warns, when the shortfall is also
/// beyond chance ([`NOISE_SIGMAS`]).
pub const WARN_BELOW_PERCENT: f64 = 90.0;
/// A thread that runs in slices shorter than the sampling period (a shared CPU) gets each
/// tick by chance: its count varies by about the square root of the expected count, 10% of
/// 100. A shortfall within this many of those is not the sampler missing ticks.
const NOISE_SIGMAS: f64 = 4.0;
/// Fewer expected samples than this are too few to warn about.
pub const MIN_EXPECTED: u64 = 100;

/// CPU time of every thread of some processes at one moment.
#[derive(Clone, Debug, Default)]
pub struct CpuTimes {
    /// CLOCK_BOOTTIME just before the first thread was read (start) or just after the last
    /// (end): samples outside the span between the two readings are not compared.
    pub at_ns: u64,
    /// tid → (pid, ns on CPU).
    pub threads: HashMap<u32, (u32, u64)>,
    /// pid → ns on CPU of the whole process, ended threads included (utime + stime).
    pub processes: HashMap<u32, u64>,
}

/// Reads the CPU time of every thread of `pids`; a process or thread that is gone, or whose
/// schedstat cannot be read (a kernel without CONFIG_SCHEDSTATS still has the file), is skipped.
pub fn read(pids: impl IntoIterator<Item = u32>, at_ns: u64) -> CpuTimes {
    let mut threads = HashMap::new();
    let mut processes = HashMap::new();
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    for pid in pids {
        if let Some(ns) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat_cpu_ticks)
            .map(|ticks| ticks.saturating_mul(1_000_000_000) / hz.max(1))
        {
            processes.insert(pid, ns);
        }
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
    CpuTimes {
        at_ns,
        threads,
        processes,
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in clock ticks. The command
/// name in parentheses may hold spaces and parentheses: fields are counted after the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // After ")": state is field 3, so utime (14) is the 12th and stime (15) the 13th.
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// An end reading: its time is taken after the last thread is read, so that every sample
/// before it is compared.
pub fn read_end(pids: impl IntoIterator<Item = u32>) -> CpuTimes {
    let mut t = read(pids, 0);
    t.at_ns = super::boottime_ns();
    t
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
    let mut sampled = 0u64;
    // Threads seen at one reading only, and those born and ended between them (seen in the
    // samples alone).
    let mut left_out: std::collections::HashSet<u32> = all
        .iter()
        .filter(|t| !through.contains_key(t))
        .copied()
        .collect();
    for s in samples
        .iter()
        .filter(|s| s.timestamp_ns >= start.at_ns && s.timestamp_ns <= end.at_ns)
    {
        if through.contains_key(&s.tid) {
            sampled += 1;
        } else {
            left_out.insert(s.tid);
        }
    }
    // Whole processes alive at both readings, ended threads included.
    let mut process_cpu_ns = 0u64;
    let mut alive = std::collections::HashSet::new();
    for (pid, &begin) in &start.processes {
        if let Some(&finish) = end.processes.get(pid)
            && finish >= begin
        {
            process_cpu_ns = process_cpu_ns.saturating_add(finish - begin);
            alive.insert(*pid);
        }
    }
    let process_sampled = samples
        .iter()
        .filter(|s| {
            s.timestamp_ns >= start.at_ns && s.timestamp_ns <= end.at_ns && alive.contains(&s.pid)
        })
        .count() as u64;
    // The kernel turns a frequency on the CPU clock into a fixed period of 1e9 / Hz ns.
    let period = (1_000_000_000 / frequency_hz.max(1)).max(1);
    Coverage {
        cpu_ns,
        sampled,
        expected: cpu_ns / period,
        threads: through.len() as u32,
        threads_left_out: u32::try_from(left_out.len()).unwrap_or(u32::MAX),
        process_cpu_ns,
        process_sampled,
        process_expected: process_cpu_ns / period,
    }
}

/// "sampled N% of expected", None when nothing could be expected (no CPU time).
pub fn percent(c: &Coverage) -> Option<f64> {
    (c.expected > 0).then(|| c.sampled as f64 * 100.0 / c.expected as f64)
}

/// The process-wide figure, ended threads included; None when nothing could be expected.
pub fn process_percent(c: &Coverage) -> Option<f64> {
    (c.process_expected > 0).then(|| c.process_sampled as f64 * 100.0 / c.process_expected as f64)
}

/// The warning for a shortfall, if any.
pub fn warning(c: &Coverage) -> Option<String> {
    // A figure is judged on at least MIN_EXPECTED samples (fewer are noise): the per-thread
    // one first, else the process-wide one, which covers threads that began or ended during
    // the recording but is only tick-accurate.
    let (p, sampled, cpu_ns, expected, whose) = if c.expected >= MIN_EXPECTED {
        let whose = format!("{} thread(s) alive throughout", c.threads);
        (percent(c)?, c.sampled, c.cpu_ns, c.expected, whose)
    } else if c.process_expected >= MIN_EXPECTED {
        let whose = "the target processes, ended threads included".to_string();
        let p = process_percent(c)?;
        (
            p,
            c.process_sampled,
            c.process_cpu_ns,
            c.process_expected,
            whose,
        )
    } else {
        return None;
    };
    let noise = NOISE_SIGMAS * (expected as f64).sqrt();
    let short = (expected as f64 - sampled as f64).max(0.0);
    (p < WARN_BELOW_PERCENT && short > noise).then(|| {
        format!(
            "sampled {p:.0}% of expected: {sampled} samples for {:.2} s on CPU of {whose}, {expected} expected; the sampling clock missed ticks that no loss counter shows: check `dmesg` for perf interrupt throttling (kernel.perf_cpu_time_max_percent), or a hypervisor delaying timers",
            cpu_ns as f64 / 1e9,
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
            processes: HashMap::new(),
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
    fn parses_stat_cpu_time() {
        let stat =
            "42 (a (weird) name) R 1 42 42 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 3 0 1000 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(281));
        assert_eq!(parse_stat_cpu_ticks("42 (x) R 1"), None);
        let own = std::fs::read_to_string("/proc/self/stat").expect("own stat");
        assert!(parse_stat_cpu_ticks(&own).is_some(), "{own}");
    }

    #[test]
    fn process_wide_coverage_counts_threads_that_ended() {
        // Thread 11 ran 0.5 s and ended; the process's own CPU time keeps it.
        let mut start = times(0, &[(10, 1, 0), (11, 1, 0)]);
        let mut end = times(100, &[(10, 1, 500_000_000)]);
        start.processes.insert(1, 2_000_000_000);
        end.processes.insert(1, 3_000_000_000);
        let mut samples: Vec<RawSample> = (0..50).map(|i| sample(10, i)).collect();
        samples.extend((0..49).map(|i| sample(11, i)));
        let c = compare(&start, &end, &samples, 100);
        assert_eq!((c.expected, c.sampled), (50, 50));
        assert_eq!((c.process_expected, c.process_sampled), (100, 99));
        assert_eq!(process_percent(&c), Some(99.0));
        // Only ended threads ran: the process-wide figure is what warns.
        let mut start = times(0, &[(11, 1, 0)]);
        let mut end = times(100, &[]);
        start.processes.insert(1, 0);
        end.processes.insert(1, 2_000_000_000);
        let c = compare(&start, &end, &samples[50..], 100);
        assert_eq!(percent(&c), None);
        let w = warning(&c).expect("49 of 200 warns");
        assert!(w.starts_with("sampled 24% of expected"), "{w}");
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
        // A thread born and ended between the readings is known from its samples alone.
        samples.push(sample(13, 5_000));
        let c = compare(&start, &end, &samples, 100);
        assert_eq!((c.threads, c.threads_left_out), (1, 3));
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
        // 99 expected: too few to judge.
        assert_eq!(warning(&c), None);
        let c = compare(&start, &end, &samples, 199);
        assert_eq!(c.expected, 199);
        let w = warning(&c).expect("50 of 199 warns");
        assert!(w.starts_with("sampled 25% of expected"), "{w}");
        // 160 of 199 (80%) is within chance of a thread on a shared CPU (4 × √199 = 56);
        // 8,500 of 10,000 (85%) is not (4 × √10000 = 400).
        let shared: Vec<RawSample> = (0..160).map(|i| sample(10, i % 100)).collect();
        assert_eq!(warning(&compare(&start, &end, &shared, 199)), None);
        let long = times(100, &[(10, 1, 10_000_000_000)]);
        let many: Vec<RawSample> = (0..8_500).map(|i| sample(10, i % 100)).collect();
        let w = warning(&compare(&start, &long, &many, 1000)).expect("85% of 10,000 warns");
        assert!(w.starts_with("sampled 85% of expected"), "{w}");
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
