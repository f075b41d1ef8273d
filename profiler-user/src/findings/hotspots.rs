//! Hotspot findings from the samples: kinds of work that are known to be worth a look when
//! they take a large share (allocation, locking, system calls, page faults, copying, regular
//! expressions, JSON, the kernel, one function alone), and with `--off-cpu` / `--locks` where
//! the threads waited. Each is reported only above its threshold, with the figures behind it.
use std::collections::HashMap;

use super::{Finding, pct};
use crate::{
    model::{Frame, FrameKind, Recording},
    outputs::summary::fmt_ns,
};

/// Thresholds, in percent of CPU samples unless said otherwise. Allocation, locking, faults,
/// copying, regex and JSON are at most a few percent of a healthy program: above 5% they are
/// a cost of their own worth removing. System calls and the kernel are normal in I/O-bound
/// programs, so only a large share is a finding.
const ALLOCATOR_MIN: f64 = 5.0;
const LOCK_CPU_MIN: f64 = 5.0;
const SYSCALL_MIN: f64 = 20.0;
const PAGE_FAULT_MIN: f64 = 5.0;
const MEMCPY_MIN: f64 = 5.0;
const REGEX_MIN: f64 = 5.0;
const JSON_MIN: f64 = 5.0;
const KERNEL_MIN: f64 = 30.0;
const ONE_FUNCTION_MIN: f64 = 50.0;
/// Percent of blocked off-CPU time in one stack.
const BLOCKING_STACK_MIN: f64 = 30.0;
/// Percent of the waiting threads' time spent waiting for locks (`--locks`).
const LOCK_WAIT_MIN: f64 = 10.0;
/// Fewer samples than this in a category say nothing: a share of 3 samples is noise.
const MIN_SAMPLES: u64 = 10;

/// The bare name, for matching.
fn name(f: &Frame) -> String {
    f.name.to_string()
}

/// The name as the other outputs show it (`_[k]`, `_[i]`), for subjects.
fn shown(f: &Frame) -> String {
    f.to_string()
}

fn is_allocator(n: &str) -> bool {
    const EXACT: &[&str] = &[
        "malloc",
        "free",
        "calloc",
        "realloc",
        "cfree",
        "valloc",
        "pvalloc",
        "memalign",
        "aligned_alloc",
        "posix_memalign",
        "malloc_consolidate",
        "sysmalloc",
        "unlink_chunk",
        "__rust_alloc",
        "__rust_dealloc",
        "__rust_realloc",
        "__rust_alloc_zeroed",
        "__rdl_alloc",
        "__rdl_dealloc",
        "__rdl_realloc",
        "__rdl_alloc_zeroed",
    ];
    const PREFIX: &[&str] = &[
        "_int_malloc",
        "_int_free",
        "_int_realloc",
        "_int_memalign",
        "__libc_malloc",
        "__libc_free",
        "__libc_calloc",
        "__libc_realloc",
        "__GI___libc_malloc",
        "__GI___libc_free",
        "__GI___libc_realloc",
        "tcache_",
        "je_",
        "tc_",
        "mi_",
        "_mi_",
        "tcmalloc::",
        "operator new",
        "operator delete",
    ];
    EXACT.contains(&n) || PREFIX.iter().any(|p| n.starts_with(p))
}

fn is_memcpy(n: &str) -> bool {
    [
        "__memmove",
        "__memcpy",
        "memcpy",
        "memmove",
        "__GI_memcpy",
        "__GI_memmove",
    ]
    .iter()
    .any(|p| n.starts_with(p))
}

fn is_regex(n: &str) -> bool {
    [
        "regex::",
        "regex_automata::",
        "regex_syntax::",
        "re2::",
        "fancy_regex::",
    ]
    .iter()
    .any(|p| n.contains(p))
        || [
            "pcre",
            "onig_",
            "regexec",
            "regcomp",
            "re_search",
            "re_compile",
        ]
        .iter()
        .any(|p| n.starts_with(p))
}

fn is_json(n: &str) -> bool {
    [
        "serde_json::",
        "simd_json::",
        "sonic_rs::",
        "rapidjson::",
        "nlohmann::",
    ]
    .iter()
    .any(|p| n.contains(p))
        || [
            "cJSON_",
            "yyjson_",
            "json_tokener_",
            "json_object_",
            "json_loads",
            "json_dumps",
        ]
        .iter()
        .any(|p| n.starts_with(p))
}

fn is_lock(f: &Frame) -> bool {
    let n = name(f);
    if f.kind == FrameKind::Kernel {
        return n.starts_with("futex_")
            || n.starts_with("__futex_")
            || n == "do_futex"
            || n == "__x64_sys_futex"
            || n.contains("queued_spin_lock_slowpath");
    }
    [
        "pthread_mutex_lock",
        "__pthread_mutex_lock",
        "__lll_lock_wait",
        "pthread_rwlock_rdlock",
        "pthread_rwlock_wrlock",
        "__pthread_rwlock_rdlock",
        "__pthread_rwlock_wrlock",
        "pthread_spin_lock",
    ]
    .iter()
    .any(|p| n.starts_with(p))
        || n.contains("lock_contended")
        || n.contains("RawMutex::lock_slow")
}

fn is_syscall_entry(n: &str) -> bool {
    n.starts_with("entry_SYSCALL_64") || n == "do_syscall_64"
}

fn is_page_fault(n: &str) -> bool {
    [
        "asm_exc_page_fault",
        "exc_page_fault",
        "do_user_addr_fault",
        "handle_mm_fault",
    ]
    .contains(&n)
}

/// The system call of a kernel stack: its `__x64_sys_*` entry point (`__x64_sys_write` →
/// `write`), else the function the syscall entry called when that was inlined (`do_writev` →
/// `writev`); samples on the way back to user mode (signals, rescheduling) have neither.
fn syscall_name(frames: &[Frame]) -> Option<String> {
    let kernel = || {
        frames
            .iter()
            .rev()
            .filter(|f| f.kind == FrameKind::Kernel)
            .map(name)
    };
    let by_entry = kernel().find_map(|n| {
        ["__x64_sys_", "__se_sys_", "__do_sys_"]
            .iter()
            .find_map(|p| n.strip_prefix(p).map(str::to_string))
    });
    if by_entry.is_some() {
        return by_entry;
    }
    let mut after = kernel().skip_while(|n| n != "do_syscall_64").skip(1);
    let mut n = after.next()?;
    if n == "x64_sys_call" {
        n = after.next()?;
    }
    if n.contains("exit_to_user_mode") {
        return Some("[return to user mode]".to_string());
    }
    Some(
        ["ksys_", "__sys_", "do_"]
            .iter()
            .find_map(|p| n.strip_prefix(p))
            .unwrap_or(&n)
            .to_string(),
    )
}

/// System calls the profiler's own probes make the target issue (optimized uprobes and
/// uretprobes return through them): the recording's cost, not the program's.
fn is_probe_syscall(n: &str) -> bool {
    n == "uprobe" || n == "uretprobe"
}

/// The first user frame that is not a C library wrapper or a probe trampoline: who asked.
fn asker(frames: &[Frame]) -> Option<String> {
    let user = || frames.iter().filter(|f| f.kind != FrameKind::Kernel);
    user()
        .find(|f| {
            let n = name(f);
            !n.starts_with("__") && !n.starts_with("[uprobes")
        })
        .or_else(|| user().next())
        .map(shown)
}

/// The caller of the outermost frame that `hit` matches: the code that asked for the work.
fn caller_of(frames: &[Frame], hit: impl Fn(&Frame) -> bool) -> Option<String> {
    let outer = frames.iter().rposition(hit)?;
    Some(
        frames
            .get(outer + 1)
            .map(shown)
            .unwrap_or_else(|| "[stack root]".to_string()),
    )
}

/// One category's samples, and who they come from.
#[derive(Default)]
struct Tally {
    samples: u64,
    by: HashMap<String, u64>,
}

impl Tally {
    fn add(&mut self, who: Option<String>, n: u64) {
        self.samples = self.samples.saturating_add(n);
        if let Some(w) = who {
            let e = self.by.entry(w).or_default();
            *e = e.saturating_add(n);
        }
    }

    /// The largest contributors, most first: `(name, samples)`.
    fn top(&self, k: usize) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self.by.iter().map(|(k, &n)| (k.as_str(), n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v.truncate(k);
        v
    }

    /// "a 61%, b 20%" of this category's samples.
    fn list(&self, k: usize) -> String {
        self.top(k)
            .iter()
            .map(|(n, s)| format!("{n} {:.0}%", pct(*s as f64, self.samples as f64)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Findings from CPU samples, largest share first.
pub fn cpu_findings(rec: &Recording) -> Vec<Finding> {
    let total: u64 = rec.samples.len() as u64;
    if total == 0 {
        return Vec::new();
    }
    let mut per_stack: HashMap<u32, u64> = HashMap::new();
    for s in &rec.samples {
        *per_stack.entry(s.stack).or_default() += 1;
    }
    let (mut alloc, mut lock, mut sys, mut fault, mut copy, mut regex, mut json, mut kernel) = (
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
    );
    let mut leaf = Tally::default();
    // Who issues the system calls: the first user frame above the kernel's.
    let mut sys_callers = Tally::default();
    for (&stack, &n) in &per_stack {
        let frames = rec.frames(stack);
        let first_user = frames
            .iter()
            .find(|f| f.kind != FrameKind::Kernel)
            .map(shown);
        leaf.add(
            Some(
                frames
                    .first()
                    .map(shown)
                    .unwrap_or_else(|| "[no stack]".into()),
            ),
            n,
        );
        let names: Vec<String> = frames.iter().map(name).collect();
        if names.iter().any(|f| is_allocator(f)) {
            alloc.add(caller_of(&frames, |f| is_allocator(&name(f))), n);
        }
        if frames.iter().any(is_lock) {
            lock.add(first_user.clone(), n);
        }
        let in_syscall = frames
            .iter()
            .any(|f| f.kind == FrameKind::Kernel && is_syscall_entry(&name(f)));
        if in_syscall {
            let call = syscall_name(&frames).unwrap_or_else(|| "[unknown]".into());
            if !is_probe_syscall(&call) {
                sys.add(Some(call), n);
                sys_callers.add(asker(&frames), n);
            }
        }
        let in_fault = frames
            .iter()
            .any(|f| f.kind == FrameKind::Kernel && is_page_fault(&name(f)));
        if in_fault {
            fault.add(first_user.clone(), n);
        }
        if names.iter().any(|f| is_memcpy(f)) {
            copy.add(caller_of(&frames, |f| is_memcpy(&name(f))), n);
        }
        if names.iter().any(|f| is_regex(f)) {
            regex.add(caller_of(&frames, |f| is_regex(&name(f))), n);
        }
        if names.iter().any(|f| is_json(f)) {
            json.add(caller_of(&frames, |f| is_json(&name(f))), n);
        }
        // System calls and faults have findings of their own: this is the rest (interrupts,
        // softirqs, the scheduler, work the kernel does on its own account).
        if !in_syscall && !in_fault && frames.first().is_some_and(|f| f.kind == FrameKind::Kernel) {
            kernel.add(frames.first().map(shown), n);
        }
    }
    let mut out = Vec::new();
    let share = |t: &Tally| pct(t.samples as f64, total as f64);
    let enough = |t: &Tally, min: f64| t.samples >= MIN_SAMPLES && share(t) >= min;
    let top_name = |t: &Tally| t.top(1).first().map(|(n, _)| n.to_string());
    let cpu = |samples: u64| fmt_ns(samples.saturating_mul(rec.sample_period_ns()) as f64);

    if let Some((f, n)) = leaf.top(1).first().copied()
        && n >= MIN_SAMPLES
        && pct(n as f64, total as f64) >= ONE_FUNCTION_MIN
    {
        out.push(Finding {
            kind: "function",
            subject: f.to_string(),
            share: pct(n as f64, total as f64),
            share_of: "CPU samples",
            evidence: format!(
                "{f} alone is {:.1}% of CPU samples by self time ({n} of {total}, {} on CPU)",
                pct(n as f64, total as f64),
                cpu(n)
            ),
            hint: format!(
                "computing in {f}: make it cheaper or call it less; nothing else matters as much"
            ),
        });
    }
    if enough(&alloc, ALLOCATOR_MIN) {
        out.push(Finding {
            kind: "allocator",
            subject: top_name(&alloc).unwrap_or_default(),
            share: share(&alloc),
            share_of: "CPU samples",
            evidence: format!(
                "{:.1}% of CPU samples in the allocator ({}); callers: {}",
                share(&alloc),
                cpu(alloc.samples),
                alloc.list(3)
            ),
            hint: "allocating: reuse buffers, reserve capacity, allocate outside loops, or try a faster allocator".into(),
        });
    }
    if enough(&lock, LOCK_CPU_MIN) {
        out.push(Finding {
            kind: "lock",
            subject: top_name(&lock).unwrap_or_default(),
            share: share(&lock),
            share_of: "CPU samples",
            evidence: format!(
                "{:.1}% of CPU samples in lock or futex code ({}); from: {}",
                share(&lock),
                cpu(lock.samples),
                lock.list(3)
            ),
            hint: "contended locks: hold them shorter, shard the data, or use lock-free or per-thread state (--locks shows who waits on which)".into(),
        });
    }
    if enough(&sys, SYSCALL_MIN) {
        out.push(Finding {
            kind: "syscalls",
            subject: top_name(&sys).unwrap_or_default(),
            share: share(&sys),
            share_of: "CPU samples",
            evidence: format!(
                "{:.1}% of CPU samples in system calls ({}): {}; issued from {}",
                share(&sys),
                cpu(sys.samples),
                sys.list(3),
                sys_callers.list(3)
            ),
            hint: "many system calls: batch them (buffered I/O, writev, larger reads), or avoid them (cache, vDSO clocks)".into(),
        });
    }
    if enough(&fault, PAGE_FAULT_MIN) {
        out.push(Finding {
            kind: "page_faults",
            subject: top_name(&fault).unwrap_or_default(),
            share: share(&fault),
            share_of: "CPU samples",
            evidence: format!(
                "{:.1}% of CPU samples handling page faults ({}); faulting in: {}",
                share(&fault),
                cpu(fault.samples),
                fault.list(3)
            ),
            hint: "memory touched for the first time: reuse memory instead of mapping it anew, pre-fault it, or use huge pages".into(),
        });
    }
    if enough(&copy, MEMCPY_MIN) {
        out.push(Finding {
            kind: "memcpy",
            subject: top_name(&copy).unwrap_or_default(),
            share: share(&copy),
            share_of: "CPU samples",
            evidence: format!(
                "{:.1}% of CPU samples copying memory (memcpy/memmove, {}); callers: {}",
                share(&copy),
                cpu(copy.samples),
                copy.list(3)
            ),
            hint: "copying: pass references or slices, avoid clones, grow buffers once".into(),
        });
    }
    if enough(&regex, REGEX_MIN) {
        out.push(Finding {
            kind: "regex",
            subject: top_name(&regex).unwrap_or_default(),
            share: share(&regex),
            share_of: "CPU samples",
            evidence: format!(
                "{:.1}% of CPU samples in a regular expression engine ({}); callers: {}",
                share(&regex),
                cpu(regex.samples),
                regex.list(3)
            ),
            hint: "regular expressions: compile each once, not per call; prefer literal search or anchored patterns".into(),
        });
    }
    if enough(&json, JSON_MIN) {
        out.push(Finding {
            kind: "json",
            subject: top_name(&json).unwrap_or_default(),
            share: share(&json),
            share_of: "CPU samples",
            evidence: format!(
                "{:.1}% of CPU samples (de)serializing JSON ({}); callers: {}",
                share(&json),
                cpu(json.samples),
                json.list(3)
            ),
            hint: "JSON: smaller payloads, borrowed (zero-copy) types, or a binary format between services".into(),
        });
    }
    if enough(&kernel, KERNEL_MIN) {
        out.push(Finding {
            kind: "kernel",
            subject: top_name(&kernel).unwrap_or_default(),
            share: share(&kernel),
            share_of: "CPU samples",
            evidence: format!(
                "{:.1}% of CPU samples in the kernel outside system calls and page faults ({}): {}",
                share(&kernel),
                cpu(kernel.samples),
                kernel.list(3)
            ),
            hint: "the kernel works on its own account (interrupts, softirqs, scheduling): look at network traffic, timers and context switches".into(),
        });
    }
    out
}

const IDLE_POOL: &str =
    "an idle thread waiting for work (a pool's park): only a problem if work queues meanwhile";
const EVENT_LOOP: &str = "an event loop waiting for I/O: idle unless requests queue meanwhile";
const LOCK: &str = "waiting on a lock or condition: --locks names the lock and its holders' stacks";
const SLEEP: &str = "sleeping: a deliberate wait (retry, poll interval, rate limit); is it needed?";
const DISK: &str = "waiting for the disk: fewer syncs, larger writes, or a cache";
const PEER: &str = "waiting for a peer (pipe, socket, child): the time is the other side's";

/// What kind of wait a blocking stack is ("f ← g ← main (in pipe_read)", from
/// `offcpu::describe_stack`). Names are matched by whole words: `clock_nanosleep` holds
/// "lock", `zread` holds "read".
fn blocking_hint(stack: &str) -> &'static str {
    let (user, kernel) = match stack.rsplit_once(" (in ") {
        Some((user, kernel)) => (user, kernel.trim_end_matches(')')),
        None => (stack, ""),
    };
    let words = words(user);
    let has = |w: &str| words.iter().any(|x| x == w);
    let has_pair = |a: &str, b: &str| words.windows(2).any(|p| p[0] == a && p[1] == b);
    // A pool's idle wait goes through a futex or an epoll like any other: its user frames
    // say it is idle.
    if has("park") || has("condvar") || has_pair("cond", "wait") || has_pair("cond", "timedwait") {
        return IDLE_POOL;
    }
    // Where the kernel held the thread says what it waited for; the user frames only say who
    // asked (and are often unnamed).
    if let Some(hint) = kernel_wait(kernel) {
        return hint;
    }
    if ["epoll", "select", "pselect", "poll", "ppoll"]
        .iter()
        .any(|w| has(w))
    {
        EVENT_LOOP
    } else if ["futex", "lock", "mutex", "rwlock", "sem", "trylock"]
        .iter()
        .any(|w| has(w))
    {
        LOCK
    } else if ["nanosleep", "sleep", "usleep"].iter().any(|w| has(w)) {
        SLEEP
    } else if ["fsync", "fdatasync", "msync", "syncfs"]
        .iter()
        .any(|w| has(w))
    {
        DISK
    } else if [
        "read", "recv", "recvmsg", "recvfrom", "accept", "accept4", "wait", "wait4", "waitpid",
    ]
    .iter()
    .any(|w| has(w))
    {
        PEER
    } else {
        "blocked off CPU: look at what it waits for"
    }
}

/// The words of function names, lower case: split at anything but letters and digits and
/// where a lower-case letter meets an upper-case one (Go's `runtime.mPark`, Java's
/// `parkNanos`).
fn words(names: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut lower_before = false;
    for c in names.chars() {
        if (!c.is_ascii_alphanumeric() || (lower_before && c.is_ascii_uppercase()))
            && !word.is_empty()
        {
            out.push(std::mem::take(&mut word));
        }
        if c.is_ascii_alphanumeric() {
            word.push(c.to_ascii_lowercase());
        }
        lower_before = c.is_ascii_lowercase() || c.is_ascii_digit();
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// The wait's kind from the kernel function it slept in, when that one says.
fn kernel_wait(f: &str) -> Option<&'static str> {
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| f.starts_with(p));
    Some(
        if starts(&[
            "ep_poll",
            "do_epoll",
            "do_select",
            "core_sys_select",
            "do_poll",
            "do_sys_poll",
        ]) {
            EVENT_LOOP
        } else if starts(&[
            "futex",
            "rwsem_down",
            "__mutex_lock",
            "mutex_lock",
            "rt_mutex",
            "__rt_mutex",
            "down_read",
            "down_write",
        ]) {
            LOCK
        } else if starts(&[
            "do_nanosleep",
            "hrtimer_nanosleep",
            "common_nsleep",
            "clock_nanosleep",
            "msleep",
        ]) {
            SLEEP
        } else if starts(&[
            // `io_schedule` itself is a scheduler frame, skipped in the description.
            "folio_wait",
            "wait_on_page",
            "bit_wait_io",
            "blk",
            "jbd2",
            "filemap",
            "wait_on_buffer",
            "__wait_on_buffer",
        ]) {
            DISK
        } else if starts(&[
            "pipe_read",
            "anon_pipe_read",
            "pipe_write",
            "anon_pipe_write",
            "wait_for_partner",
            "unix_stream",
            "unix_dgram",
            "sk_wait",
            "sk_stream_wait",
            "inet_csk",
            "tcp_",
            "udp_",
            "do_wait",
            "__do_wait",
            "kernel_wait",
            "wait_woken",
        ]) {
            PEER
        } else {
            return None;
        },
    )
}

/// With `--off-cpu`: one stack holding most of the blocked time.
pub fn blocking_finding(rec: &Recording) -> Option<Finding> {
    rec.off_cpu_info.as_ref()?;
    let stacks = crate::offcpu::blocking_stacks(rec);
    let blocked: Vec<_> = stacks.iter().filter(|s| !s.preempted).collect();
    let total = blocked.iter().fold(0u64, |t, s| t.saturating_add(s.ns));
    let top = blocked.first()?;
    let share = pct(top.ns as f64, total as f64);
    (share >= BLOCKING_STACK_MIN).then(|| Finding {
        kind: "blocking",
        subject: top.stack.clone(),
        share,
        share_of: "blocked off-CPU time",
        evidence: format!(
            "{:.1}% of the blocked time ({} of {}, {} waits) in one stack: {}",
            share,
            fmt_ns(top.ns as f64),
            fmt_ns(total as f64),
            top.intervals,
            top.stack
        ),
        hint: blocking_hint(&top.stack).to_string(),
    })
}

/// With `--locks`: threads that spent a large part of their time waiting for locks.
pub fn lock_wait_finding(rec: &Recording) -> Option<Finding> {
    rec.lock_info.as_ref()?;
    let mut by_lock: HashMap<(u32, u64), (String, u64, u64)> = HashMap::new();
    let mut tids = std::collections::HashSet::new();
    let mut total = 0u64;
    for w in &rec.lock_waits {
        let e = by_lock.entry((w.pid, w.address)).or_default();
        if e.0.is_empty() {
            e.0 = crate::locks::lock_frame(w);
        }
        e.1 = e.1.saturating_add(w.total_ns);
        e.2 = e.2.saturating_add(w.count);
        tids.insert(w.tid);
        total = total.saturating_add(w.total_ns);
    }
    let mut locks: Vec<_> = by_lock.into_values().collect();
    locks.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let (lock, ns, waits) = locks.first()?;
    let threads_time = rec.duration_ns().saturating_mul(tids.len() as u64);
    let share = pct(total as f64, threads_time as f64);
    (share >= LOCK_WAIT_MIN).then(|| Finding {
        kind: "lock_wait",
        subject: lock.clone(),
        share,
        share_of: "time of the threads that waited",
        evidence: format!(
            "{} threads waited {} for locks ({:.1}% of their time); most on {lock}: {} in {waits} waits",
            tids.len(),
            fmt_ns(total as f64),
            share,
            fmt_ns(*ns as f64)
        ),
        hint: "lock contention: hold the lock shorter, split it, or give each thread its own data".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FrameName;

    /// Kernel frames, leaf first, then one user frame.
    fn stack(kernel: &[&'static str]) -> Vec<Frame<'static>> {
        let frame = |n, kind| Frame {
            name: FrameName::Function(n),
            kind,
            location: None,
            inline_depth: 0,
        };
        let mut v: Vec<Frame> = kernel.iter().map(|n| frame(n, FrameKind::Kernel)).collect();
        v.push(frame("__GI___writev", FrameKind::User));
        v.push(frame("flush", FrameKind::User));
        v
    }

    #[test]
    fn system_calls_are_named_when_their_entry_point_was_inlined() {
        let entry = ["do_syscall_64", "entry_SYSCALL_64_after_hwframe"];
        let named = |inner: &[&'static str]| {
            let mut k = inner.to_vec();
            k.extend(entry);
            syscall_name(&stack(&k))
        };
        assert_eq!(
            named(&["vfs_write", "ksys_write", "__x64_sys_write", "x64_sys_call"]).as_deref(),
            Some("write")
        );
        assert_eq!(
            named(&["vfs_writev", "do_writev"]).as_deref(),
            Some("writev")
        );
        assert_eq!(
            named(&["schedule", "exit_to_user_mode_loop"]).as_deref(),
            Some("[return to user mode]")
        );
        assert!(is_probe_syscall(
            &named(&["__do_sys_uprobe"]).unwrap_or_default()
        ));
        assert_eq!(syscall_name(&stack(&["asm_exc_page_fault"])), None);
        // Who asked: past the C library's wrapper.
        assert_eq!(asker(&stack(&[])).as_deref(), Some("flush"));
    }

    #[test]
    fn a_wait_is_told_by_where_the_kernel_held_it_and_whole_words() {
        let cases = [
            // `clock_nanosleep` holds "lock": a sleep was once called a lock wait.
            (
                "__GI___clock_nanosleep ← pysleep ← time_sleep ← main (in do_nanosleep)",
                SLEEP,
            ),
            ("__GI___clock_nanosleep ← pysleep ← main", SLEEP),
            (
                "__futex_abstimed_wait_common ← ___pthread_mutex_lock ← work (in futex_do_wait)",
                LOCK,
            ),
            (
                "__futex_abstimed_wait_common64 ← __pthread_cond_wait_common ← worker (in futex_do_wait)",
                IDLE_POOL,
            ),
            (
                "std::thread::park ← worker (in futex_wait_queue)",
                IDLE_POOL,
            ),
            (
                "epoll_wait ← mio::poll::Poll::poll ← run (in ep_poll)",
                EVENT_LOOP,
            ),
            // `zread` holds "read", `bash+0x6478a` nothing: the kernel says it is a pipe.
            (
                "__GI___libc_read ← zread ← bash+0x6478a (in anon_pipe_read)",
                PEER,
            ),
            ("zreadc ← bash+0x1 (in anon_pipe_read)", PEER),
            ("fdatasync ← commit (in folio_wait_bit_common)", DISK),
            ("__GI___wait4 ← wait_for ← main (in do_wait)", PEER),
            ("accept4 ← serve", PEER),
            ("[no user stack] (in rwsem_down_read_slowpath)", LOCK),
            // Go's idle M: the park is in a camelCase name, under a futex.
            (
                "runtime.futex ← runtime.futexsleep ← runtime.notesleep ← runtime.mPark (in futex_wait_queue)",
                IDLE_POOL,
            ),
            ("Unsafe.park ← LockSupport.parkNanos ← take", IDLE_POOL),
            // `sync` is a module name as often as a system call.
            (
                "std::sync::Once::call_once_force ← init",
                "blocked off CPU: look at what it waits for",
            ),
            ("accept ← serve (in inet_csk_wait_for_connect)", PEER),
            (
                "unlocked_loop ← main (in some_driver_wait)",
                "blocked off CPU: look at what it waits for",
            ),
        ];
        for (stack, hint) in cases {
            assert_eq!(blocking_hint(stack), hint, "{stack}");
        }
    }
}
