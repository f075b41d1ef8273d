//! Allocation analysis (`--alloc`): sampled allocations scaled back to estimated totals, per
//! stack (allocated, and still in use at the end: leak candidates), per allocation site and
//! per span.
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::{
    model::{Alloc, ProcessIndex, Recording},
    outputs::folded::{GroupBy, stack_line_in_span},
};

const TOP_SITES: usize = 10;

/// What one sampled allocation of `size` bytes stands for with a mean of `mean` bytes
/// between samples: (allocations, bytes). Every byte is a sample point with probability
/// 1/mean, independently, so an allocation of `size` bytes is sampled with probability
/// p = 1 - e^(-size/mean), and weighting it by 1/p makes the sums unbiased.
pub fn scale(size: u64, mean: u64) -> (f64, f64) {
    if mean <= 1 || size == 0 {
        return (1.0, size as f64);
    }
    let p = -(-(size as f64) / mean as f64).exp_m1();
    if p <= 0.0 || !p.is_finite() {
        return (1.0, size as f64);
    }
    (1.0 / p, size as f64 / p)
}

fn weights<'a>(rec: &'a Recording) -> impl Iterator<Item = (&'a Alloc, f64, f64)> + 'a {
    let mean = rec.alloc_info.as_ref().map_or(1, |i| i.sample_bytes);
    rec.allocs.iter().map(move |a| {
        let (n, b) = scale(a.size, mean);
        (a, n, b)
    })
}

/// Folded stacks weighted by estimated bytes: all allocations, or (`live`) those never freed.
fn lines(rec: &Recording, group: GroupBy, live: bool) -> Vec<(String, u64)> {
    let index = ProcessIndex::new(rec);
    let mut by_key: BTreeMap<((u32, crate::model::Generation), u32, u32), f64> = BTreeMap::new();
    for (a, _, bytes) in weights(rec).filter(|(a, _, _)| !live || a.live) {
        let tid = if group == GroupBy::Thread { a.tid } else { 0 };
        let process = (a.pid, index.generation(a.pid, a.timestamp_ns));
        *by_key.entry((process, tid, a.stack)).or_default() += bytes;
    }
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for ((process, tid, stack), bytes) in by_key {
        *out.entry(stack_line_in_span(rec, group, process, tid, stack, &[]))
            .or_default() += bytes;
    }
    out.into_iter()
        .map(|(l, b)| (l, b.round() as u64))
        .filter(|(_, b)| *b > 0)
        .collect()
}

/// `alloc.folded`: stacks weighted by the bytes they allocated (estimated).
pub fn alloc_lines(rec: &Recording, group: GroupBy) -> Vec<(String, u64)> {
    lines(rec, group, false)
}

/// `inuse.folded`: stacks weighted by the bytes they allocated that were never freed.
pub fn inuse_lines(rec: &Recording, group: GroupBy) -> Vec<(String, u64)> {
    lines(rec, group, true)
}

#[derive(Debug, Serialize)]
pub struct AllocReport {
    /// Mean bytes between samples; 1: every allocation.
    pub sample_bytes: u64,
    /// Estimated from the samples.
    pub bytes: f64,
    pub allocations: f64,
    pub inuse_bytes: f64,
    pub inuse_allocations: f64,
    /// Exact, counted by the kernel (whole recording even in a window).
    pub counted_bytes: u64,
    pub counted_calls: u64,
    pub counted_frees: u64,
    pub nested_calls: u64,
    pub sampled: u64,
    pub received: u64,
    /// Sampled allocations lost (ring buffer full, no room between entry and return).
    pub lost: u64,
    /// Sampled allocations whose free could not be watched (never counted as in use).
    pub untracked: u64,
    pub bpf_runs: u64,
    pub bpf_ns_per_run: Option<f64>,
    pub windowed: bool,
    pub files: Vec<String>,
    /// Allocating call sites (the caller of the allocator), most bytes first.
    pub top_sites: Vec<Site>,
    /// The same by bytes never freed.
    pub top_inuse: Vec<Site>,
    /// Spans by name, most bytes first; empty without spans.
    pub by_span: Vec<SpanBytes>,
}

#[derive(Debug, Serialize)]
pub struct Site {
    /// "caller ← its caller ← …", leaf first, the allocator function last in brackets.
    pub stack: String,
    pub bytes: f64,
    pub allocations: f64,
    pub percent: f64,
}

#[derive(Debug, Serialize)]
pub struct SpanBytes {
    pub name: String,
    pub bytes: f64,
    pub allocations: f64,
    pub inuse_bytes: f64,
}

/// "site_60 ← main ← … [malloc]": the allocation site first.
pub fn describe(rec: &Recording, a: &Alloc) -> String {
    let user = rec.user_frame_names(a.stack, 1, 4);
    let mut s = if user.is_empty() {
        "[no stack]".to_string()
    } else {
        user.join(" ← ")
    };
    s += &format!(" [{}]", a.function);
    s
}

fn top_sites(rec: &Recording, live: bool) -> Vec<Site> {
    let mut by: HashMap<String, (f64, f64)> = HashMap::new();
    let mut total = 0.0;
    for (a, n, b) in weights(rec).filter(|(a, _, _)| !live || a.live) {
        let e = by.entry(describe(rec, a)).or_default();
        e.0 += b;
        e.1 += n;
        total += b;
    }
    let mut v: Vec<Site> = by
        .into_iter()
        .map(|(stack, (bytes, allocations))| Site {
            stack,
            bytes,
            allocations,
            percent: if total > 0.0 {
                100.0 * bytes / total
            } else {
                0.0
            },
        })
        .collect();
    v.sort_by(|a, b| {
        b.bytes
            .total_cmp(&a.bytes)
            .then_with(|| a.stack.cmp(&b.stack))
    });
    v.truncate(TOP_SITES);
    v
}

fn by_span(rec: &Recording) -> Vec<SpanBytes> {
    let names: HashMap<(u32, u64), &str> = rec
        .spans
        .iter()
        .map(|s| ((s.pid, s.id), s.name.as_str()))
        .collect();
    let mut acc: HashMap<&str, (f64, f64, f64)> = HashMap::new();
    for (a, n, b) in weights(rec).filter(|(a, _, _)| a.span != 0) {
        let Some(name) = names.get(&(a.pid, a.span)) else {
            continue;
        };
        let e = acc.entry(name).or_default();
        e.0 += b;
        e.1 += n;
        if a.live {
            e.2 += b;
        }
    }
    let mut v: Vec<SpanBytes> = acc
        .into_iter()
        .map(|(name, (bytes, allocations, inuse_bytes))| SpanBytes {
            name: name.to_string(),
            bytes,
            allocations,
            inuse_bytes,
        })
        .collect();
    v.sort_by(|a, b| {
        b.bytes
            .total_cmp(&a.bytes)
            .then_with(|| a.name.cmp(&b.name))
    });
    v
}

impl AllocReport {
    pub fn new(rec: &Recording) -> Option<Self> {
        let info = rec.alloc_info.as_ref()?;
        let (mut bytes, mut allocations, mut inuse_bytes, mut inuse_allocations) =
            (0.0, 0.0, 0.0, 0.0);
        for (a, n, b) in weights(rec) {
            bytes += b;
            allocations += n;
            if a.live {
                inuse_bytes += b;
                inuse_allocations += n;
            }
        }
        Some(Self {
            sample_bytes: info.sample_bytes,
            bytes,
            allocations,
            inuse_bytes,
            inuse_allocations,
            counted_bytes: info.bytes,
            counted_calls: info.calls,
            counted_frees: info.frees,
            nested_calls: info.nested,
            sampled: info.sampled,
            received: info.received,
            lost: info.lost_ringbuf.saturating_add(info.threads_full),
            untracked: info.untracked,
            bpf_runs: info.bpf_run_count,
            bpf_ns_per_run: (info.bpf_run_count > 0)
                .then(|| info.bpf_run_time_ns as f64 / info.bpf_run_count as f64),
            windowed: info.windowed,
            files: info.files.clone(),
            top_sites: top_sites(rec, false),
            top_inuse: top_sites(rec, true),
            by_span: by_span(rec),
        })
    }

    pub fn to_text(&self, t: &mut String) {
        use std::fmt::Write as _;
        let mib = |b: f64| b / f64::from(1u32 << 20);
        let _ = writeln!(
            t,
            "\nAllocations: {:.1} MiB in {:.0} allocations (estimated from {} samples, 1 per {} bytes; counted: {:.1} MiB in {} calls{}); {:.1} MiB in {:.0} allocations never freed; {} samples lost, {} untracked",
            mib(self.bytes),
            self.allocations,
            self.received,
            self.sample_bytes,
            mib(self.counted_bytes as f64),
            self.counted_calls,
            if self.windowed {
                ", whole recording"
            } else {
                ""
            },
            mib(self.inuse_bytes),
            self.inuse_allocations,
            self.lost,
            self.untracked,
        );
        if let Some(ns) = self.bpf_ns_per_run {
            let _ = writeln!(
                t,
                "BPF cost: {ns:.0} ns per allocator probe hit (entry, return and free)"
            );
        }
        for (title, sites) in [
            ("Top allocation sites", &self.top_sites),
            ("Never freed (leak candidates)", &self.top_inuse),
        ] {
            if sites.is_empty() {
                continue;
            }
            let _ = writeln!(t, "\n{title}");
            for s in sites {
                let _ = writeln!(
                    t,
                    "  {:>9.1} MiB {:>5.1}% {:>10.0}×  {}",
                    mib(s.bytes),
                    s.percent,
                    s.allocations,
                    s.stack
                );
            }
        }
        if !self.by_span.is_empty() {
            let _ = writeln!(
                t,
                "\n  {:<28} {:>12} {:>12} {:>12}",
                "span", "allocated", "allocations", "never freed"
            );
            for s in &self.by_span {
                let _ = writeln!(
                    t,
                    "  {:<28} {:>8.1} MiB {:>12.0} {:>8.1} MiB",
                    s.name,
                    mib(s.bytes),
                    s.allocations,
                    mib(s.inuse_bytes)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_is_unbiased_for_small_and_large_allocations() {
        assert_eq!(scale(100, 1), (1.0, 100.0));
        // Small against the mean: one sample stands for about mean bytes.
        let (n, b) = scale(64, 512 << 10);
        assert!((b / f64::from(512 << 10) - 1.0).abs() < 1e-3, "{b}");
        assert!((n - f64::from(512 << 10) / 64.0).abs() / n < 1e-3);
        // Far larger than the mean: always sampled, stands for itself.
        let (n, b) = scale(1 << 30, 512 << 10);
        assert!((n - 1.0).abs() < 1e-9 && (b - f64::from(1 << 30)).abs() < 1.0);
        assert_eq!(scale(0, 512), (1.0, 0.0));
    }

    /// The estimate is unbiased: sampling a known stream of mixed sizes many times with
    /// the kernel's rule (a countdown of exponential draws) gives back its total.
    #[test]
    fn sampling_a_known_stream_gives_back_its_bytes() {
        let mean = 64u64 << 10;
        let table = crate::collect::alloc::exp_table(mean, 4096);
        let sizes = [48u64, 4096, 100_000, 1 << 20, 24];
        let truth: u64 = sizes.iter().sum::<u64>() * 100_000;
        // A small deterministic generator stands for bpf_get_prandom_u32.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut remaining = table[(next() & 4095) as usize];
        let mut est = [0f64; 5];
        for _ in 0..100_000 {
            for (i, &s) in sizes.iter().enumerate() {
                if s < remaining {
                    remaining -= s;
                } else {
                    remaining = table[(next() & 4095) as usize];
                    est[i] += scale(s, mean).1;
                }
            }
        }
        let total: f64 = est.iter().sum();
        assert!(
            (total / truth as f64 - 1.0).abs() < 0.02,
            "{total} vs {truth}"
        );
        // Per size too, where there are samples enough to tell: small and large allocations
        // are not favoured.
        for (i, &s) in sizes.iter().enumerate() {
            if s * 100_000 / mean < 2000 {
                continue;
            }
            let want = (s * 100_000) as f64;
            assert!(
                (est[i] / want - 1.0).abs() < 0.1,
                "size {s}: {} vs {want}",
                est[i]
            );
        }
    }
}
