//! Entry points for fuzzing the decoders of untrusted input: `recording.pb` (any file handed
//! to `profiler report`), `/proc/PID/maps` text (written by the kernel, but for any mapping name
//! a target chooses) and `--fail-if` rules. Each must end in a value or an error for any input,
//! never in a panic. Driven by `profiler-fuzz` (tests/fuzz); not part of the CLI.
use std::io;

use crate::{
    fail_if,
    model::Recording,
    outputs::{self, flamegraph::Weight, folded::GroupBy, perfetto::SpanTracks},
};

/// `data[0]` even: `data[1..]` is a whole file, header included (the header checks are
/// fuzzed). Odd: `data[1..]` is the payload, given a valid header, so the protobuf decoder and
/// every output behind it see the mutated bytes.
pub fn recording(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let path = std::path::Path::new("fuzz.pb");
    let rec = if mode & 1 == 0 {
        outputs::recording::decode(rest, path)
    } else {
        outputs::recording::decode(&with_header(rest), path)
    };
    if let Ok(rec) = rec {
        every_output(&rec);
        let ms = std::time::Duration::from_millis;
        let from = u64::from(mode >> 1);
        every_output(&rec.window(Some(ms(from)), Some(ms(from.saturating_mul(7)))));
    }
}

/// A valid header in front of `payload`.
pub fn with_header(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len().saturating_add(outputs::recording::HEADER_LEN));
    out.extend_from_slice(outputs::recording::MAGIC);
    out.extend_from_slice(&crate::model::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&outputs::recording::crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Everything `profiler report` derives from a recording, written nowhere.
pub fn every_output(rec: &Recording) {
    use outputs::folded;
    for group in [
        GroupBy::Comm,
        GroupBy::Process,
        GroupBy::Thread,
        GroupBy::None,
    ] {
        let sets = [
            (folded::folded_lines(rec, group), Weight::Samples),
            (folded::span_folded_lines(rec, group), Weight::Samples),
            (folded::off_cpu_lines(rec, group), Weight::OffCpu),
            (folded::wall_lines(rec, group), Weight::Wall),
        ];
        for (lines, weight) in &sets {
            let _ = folded::write(lines, &mut io::sink());
            let _ = outputs::flamegraph::write_weighted(rec, lines, *weight, &mut io::sink());
        }
    }
    let summary = outputs::summary::Summary::new(rec);
    let _ = summary.to_text();
    let _ = serde_json::to_vec(&summary);
    for tracks in [SpanTracks::Thread, SpanTracks::Async, SpanTracks::Both] {
        let _ = outputs::perfetto::write(rec, tracks, &mut io::sink());
    }
    {
        use outputs::pprof;
        let profiles = [
            Some(pprof::cpu_profile(rec)),
            pprof::off_cpu_profile(rec),
            pprof::alloc_profile(rec),
            pprof::locks_profile(rec),
        ];
        for p in profiles.iter().flatten() {
            let _ = pprof::write(p, &mut io::sink());
        }
    }
    let by_name = crate::spans::stats_by_name(&rec.spans);
    let _ = crate::spans::concurrency_peak(&rec.spans);
    let _ = outputs::recording::encode(rec);
    let _ = by_name;
}

/// `/proc/PID/maps` text.
pub fn maps(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for m in crate::collect::procfs::parse_maps(&text) {
        let _ = m.is_file();
    }
}

/// A `--fail-if` rule: parsed, printed, parsed again (the canonical form must parse to the
/// same rule), and judged against spans whose statistics come from the input too.
pub fn fail_if(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(rule) = fail_if::Rule::parse(&text) else {
        return;
    };
    let again = fail_if::Rule::parse(&rule.to_string());
    assert_eq!(
        again.as_ref().ok(),
        Some(&rule),
        "canonical form of {text:?}: {again:?}"
    );
    let n = |i: usize| {
        data.get(i..i.saturating_add(8))
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(u64::MAX)
    };
    let stats = |name: &str, base: usize| fail_if::NameStats {
        name: name.into(),
        count: n(base),
        total_ns: n(base + 1),
        mean_ns: f64::from_bits(n(base + 2)),
        stddev_ns: f64::from_bits(n(base + 3)),
        p50_ns: n(base + 4),
        p95_ns: n(base + 5),
        p99_ns: n(base + 6),
        max_ns: n(base + 7),
        samples: n(base + 8),
        incomplete: n(base + 9),
    };
    let by_name = [stats("db_query", 0), stats("", 3), stats("*", 5)];
    let facts = fail_if::Facts {
        by_name: &by_name,
        concurrency_peak: n(1),
        span_count: n(2),
        lost_samples: n(4),
        lost_events: n(6),
    };
    for v in fail_if::evaluate(std::slice::from_ref(&rule), &facts) {
        let _ = v.message;
    }
    let _ = fail_if::evaluate(&[], &fail_if::Facts::default());
    // diff.* rules against a comparison with every kind of entry, some deltas undefined.
    let diff = sample_diff();
    for v in fail_if::evaluate_diff(std::slice::from_ref(&rule), &diff) {
        let _ = v.message;
    }
}

/// A comparison of two small recordings: functions that grew, fell, appeared and vanished,
/// a span name on both sides and one on each, empty CPU on neither.
fn sample_diff() -> crate::diff::Diff {
    use crate::model::{Function, Line, Location, Recording, Sample, Span, Stack};
    let rec = |leaves: &[(&str, u64)], spans: &[(&str, u64)]| {
        let mut r = Recording::default();
        for (i, &(name, n)) in leaves.iter().enumerate() {
            r.functions.push(Function {
                name: name.into(),
                file: String::new(),
            });
            r.locations.push(Location {
                lines: vec![Line {
                    function: i as u32,
                    line: 0,
                }],
                ..Default::default()
            });
            r.stacks.push(Stack {
                locations: vec![i as u32],
            });
            for _ in 0..n {
                r.samples.push(Sample {
                    stack: i as u32,
                    ..Default::default()
                });
            }
        }
        for (i, &(name, ns)) in spans.iter().enumerate() {
            r.spans.push(Span {
                id: i as u64 + 1,
                name: name.into(),
                end_ns: ns,
                ..Default::default()
            });
        }
        r
    };
    let base = rec(
        &[("grew", 10), ("fell", 50), ("gone", 5)],
        &[("s", 0), ("s", 100), ("old", 5)],
    );
    let new = rec(
        &[("grew", 60), ("fell", 10), ("came", 5)],
        &[("s", 150), ("s", 160), ("new", 5)],
    );
    crate::diff::compare(&base, "base", &new, "new")
}

/// A file a target maps, as any bytes: a program chooses its own ELF, and a sidecar running
/// as root reads the files of every process in a container it does not trust. Every reader
/// of a module's bytes runs on it as a recording and its symbolization would: the module
/// store's checks (build id, frame pointers, symbols, separate debug file, a rewrite), the
/// unwind tables and a DWARF unwind from its own functions over a made-up stack, offsets
/// to virtual addresses, and blazesym on the file.
pub fn module(data: &[u8]) {
    use crate::collect::{
        modules::{self, ModuleStore},
        procfs::{AddressSpace, Mapping},
        unwind::Unwinder,
    };
    use blazesym::symbolize::{
        Input,
        source::{Elf, Source},
    };
    let Some(file) = modules::memfd_copy(data) else {
        return;
    };
    let mut store = ModuleStore::default();
    let Some(id) = store.intern_file(&modules::fd_path(&file).to_string_lossy(), "/fuzz/module")
    else {
        return;
    };
    let Some(m) = store.get(id) else {
        return;
    };
    let _ = (
        m.build_id(),
        m.frame_pointers(),
        m.has_symbols(),
        m.rewritten(),
    );
    let offsets = function_offsets(data);
    let _ = m.vaddrs_of(&offsets);

    // The whole file mapped once, as a loader maps a small program's segments.
    const BASE: u64 = 0x5555_0000_0000;
    let len = (data.len() as u64).max(1).next_multiple_of(4096);
    let mut space = AddressSpace::new(1);
    space.mappings.push(Mapping {
        start: BASE,
        end: BASE + len,
        offset: 0,
        path: "/fuzz/module".into(),
        identity: None,
        module: Some(id),
        since_ns: 0,
    });
    let mut unwinder = Unwinder::default();
    let sp = 0x7ffd_0000_0000u64;
    for (i, &offset) in offsets.iter().enumerate() {
        // Return addresses into the module's functions, stack addresses above sp and junk.
        let stack: Vec<u8> = (0..64u64)
            .flat_map(|k| {
                let word = match (k + i as u64) % 4 {
                    0 => BASE
                        .wrapping_add(offsets[(k as usize + i) % offsets.len()])
                        .wrapping_add(5),
                    1 => sp + 8 * (k + 2),
                    2 => 0,
                    _ => k.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                };
                word.to_le_bytes()
            })
            .collect();
        let regs = profiler_common::DwarfRegs {
            ip: BASE.wrapping_add(offset).wrapping_add(i as u64 % 7),
            sp,
            bp: sp + 16,
            stack_len: stack.len() as u32,
            source: profiler_common::dwarf_regs::INTERRUPTED,
        };
        let _ = unwinder.unwind((1, 0), &space, &store, &regs, &stack, i % 2 == 0);
    }

    let Some(readable) = store.readable_path(id) else {
        return;
    };
    // Through what a recording's symbolization calls, which contains blazesym's panics: a
    // panic that gets out is a crash here.
    let symbolizer = crate::symbolize::symbolizer();
    let src = Source::Elf(Elf::new(readable.path()));
    let mut unnamed = crate::symbolize::Unnamed::default();
    use crate::symbolize::names_of;
    let inputs: [crate::symbolize::InputKind; 2] =
        [|a| Input::FileOffset(a), |a| Input::VirtOffset(a)];
    for input in inputs {
        let _ = names_of(&symbolizer, &src, input, &offsets, ("", ""), &mut unnamed);
    }
}

/// Where a file's functions start by its own symbol table (any values, from the file), and
/// offsets around its start and end: at most 16, never none.
fn function_offsets(data: &[u8]) -> Vec<u64> {
    use object::{Object, ObjectSymbol};
    let mut offsets: Vec<u64> = object::File::parse(data)
        .map(|f| {
            f.symbols()
                .filter(|s| s.kind() == object::SymbolKind::Text)
                .map(|s| s.address())
                .take(12)
                .collect()
        })
        .unwrap_or_default();
    let len = data.len() as u64;
    offsets.extend([0, 0x40, len / 2, len.saturating_sub(1)]);
    offsets
}

/// A ring buffer record as the kernel programs write it (`collect::decode::parse_event`),
/// then what the drain loop does with the event: a record the kernel (or a mismatched
/// eBPF object) gets wrong must be refused or bounded, never read out of bounds.
pub fn ring_record(data: &[u8]) {
    use crate::collect::{Event, RawStack, offcpu, parse_event};
    // A record with a stack copy: the copy's bytes lie inside the record, after its head.
    let copy_ok = |regs: &profiler_common::DwarfRegs, stack: std::ops::Range<usize>| {
        assert_eq!(stack.start, profiler_common::SAMPLE_DWARF_HEADER);
        assert!(
            stack.start <= stack.end && stack.end <= data.len(),
            "{stack:?}"
        );
        assert!(stack.len() as u64 <= u64::from(regs.stack_len), "{stack:?}");
        // What the drain loop does with it.
        let _ = data.get(stack).unwrap_or(&[]).to_vec();
    };
    let stack_ok = |s: &RawStack| match s {
        RawStack::Inline(frames) => {
            assert!(
                !frames.is_empty() && frames.len() <= profiler_common::MAX_STACK_DEPTH,
                "inline stack of {} frames",
                frames.len()
            );
        }
        RawStack::Id(id) => assert!(i32::try_from(*id).is_ok(), "stack id {id} was negative"),
        RawStack::Empty => {}
    };
    // A name the kernel sent is never empty (an empty one means none was sent), and lossy
    // UTF-8 of 16 bytes is at most 4 bytes per byte.
    let comm_ok = |comm: Option<&str>| {
        assert!(comm.is_none_or(|c| !c.is_empty() && c.len() <= 4 * profiler_common::COMM_LEN));
    };
    match parse_event(data) {
        Some(Event::SampleDwarf(s, comm, regs, stack)) => {
            copy_ok(&regs, stack);
            comm_ok(comm.as_deref());
            stack_ok(&s.kernel);
        }
        Some(Event::OffCpuStack { regs, stack, .. } | Event::LockWait(_, regs, stack)) => {
            copy_ok(&regs, stack);
        }
        Some(Event::KernelLock(e, regs, stack)) => {
            copy_ok(&regs, stack);
            let w = crate::collect::locks::RawLockWait::from_kernel(&e);
            assert!(w.end_ns >= w.begin_ns, "{w:?}");
            stack_ok(&w.kernel);
        }
        Some(Event::Sample(s, comm)) => {
            comm_ok(comm.as_deref());
            stack_ok(&s.user);
            stack_ok(&s.kernel);
        }
        Some(Event::OffCpu(e)) => {
            let o = offcpu::from_event(&e);
            assert!(o.total_ns <= o.end_ns, "{o:?}");
            stack_ok(&o.user);
            stack_ok(&o.kernel);
        }
        Some(Event::Alloc(e)) => {
            let a = crate::collect::alloc::RawAlloc::from_event(&e);
            stack_ok(&a.user);
            let (n, b) = crate::alloc::scale(a.size, 1 + u64::from(e.func));
            assert!(n >= 1.0 && b >= 0.0, "{n} {b}");
        }
        Some(Event::Span(_) | Event::Process(_) | Event::LockDone(_)) | None => {}
    }
}

/// Well-formed records of every kind the kernel programs send, zero-filled but for their
/// kind and a few values: the seeds the fuzzer mutates (and its corpus, `tests/fuzz/corpus/ring`).
pub fn ring_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use profiler_common::{
        DwarfRegs, EventKind, OffCpuEvent, ProcessEvent, SampleEvent, SampleInlineEvent, SpanEvent,
    };
    fn bytes<T>(kind: EventKind, extra: usize) -> Vec<u8> {
        let mut v = vec![0u8; size_of::<T>() + extra];
        v[..4].copy_from_slice(&(kind as u32).to_ne_bytes());
        // cpu 1, timestamp 1 s, pid 42, tid 43 where the layout has them.
        v[4..8].copy_from_slice(&1u32.to_ne_bytes());
        v[8..16].copy_from_slice(&1_000_000_000u64.to_ne_bytes());
        v[16..20].copy_from_slice(&42u32.to_ne_bytes());
        v[20..24].copy_from_slice(&43u32.to_ne_bytes());
        v
    }
    let sample = size_of::<SampleEvent>();
    let mut inline = bytes::<SampleInlineEvent>(EventKind::SampleInline, 0);
    inline[sample..sample + 4].copy_from_slice(&2u32.to_ne_bytes());
    inline[sample + 8..sample + 16].copy_from_slice(&0x40_1000u64.to_ne_bytes());
    inline[sample + 16..sample + 24].copy_from_slice(&0x40_2000u64.to_ne_bytes());
    let mut dwarf = bytes::<SampleEvent>(EventKind::SampleDwarf, size_of::<DwarfRegs>() + 64);
    // stack_len (after ip, sp, bp): 64 bytes follow.
    dwarf[sample + 24..sample + 28].copy_from_slice(&64u32.to_ne_bytes());
    let with_copy = |kind: EventKind| {
        let mut v = dwarf.clone();
        v[..4].copy_from_slice(&(kind as u32).to_ne_bytes());
        v
    };
    vec![
        ("sample", bytes::<SampleEvent>(EventKind::Sample, 0)),
        ("sample-inline", inline),
        ("sample-dwarf", with_copy(EventKind::SampleDwarf)),
        ("span-begin", bytes::<SpanEvent>(EventKind::SpanBegin, 0)),
        ("span-fn-call", bytes::<SpanEvent>(EventKind::SpanFnCall, 0)),
        (
            "process-fork",
            bytes::<ProcessEvent>(EventKind::ProcessFork, 0),
        ),
        (
            "process-exit",
            bytes::<ProcessEvent>(EventKind::ProcessExit, 0),
        ),
        ("off-cpu", bytes::<OffCpuEvent>(EventKind::OffCpu, 0)),
        (
            "alloc",
            bytes::<profiler_common::alloc::AllocEvent>(EventKind::Alloc, 0),
        ),
        ("lock-wait", with_copy(EventKind::LockWait)),
        (
            "lock-done",
            bytes::<profiler_common::locks::LockDoneEvent>(EventKind::LockDone, 0),
        ),
        ("kernel-lock", with_copy(EventKind::KernelLock)),
    ]
}

/// Offsets of the length fields a record of `kind` carries, where the fuzzer plants edge
/// values: the inline stacks' frame counts, the DWARF stack byte count.
pub fn ring_length_fields(kind: u32) -> Vec<usize> {
    use profiler_common::{EventKind, SampleEvent};
    let sample = size_of::<SampleEvent>();
    match EventKind::from_u32(kind) {
        Some(EventKind::SampleInline) => vec![sample, sample + 4],
        Some(
            EventKind::SampleDwarf
            | EventKind::OffCpuStack
            | EventKind::LockWait
            | EventKind::KernelLock,
        ) => {
            vec![sample + 24]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_rules_are_judged_on_the_sample_comparison() {
        let d = sample_diff();
        let rule = |t: &str| fail_if::Rule::parse(t).unwrap_or_else(|e| panic!("{e}"));
        let v = fail_if::evaluate_diff(&[rule("diff.fn(grew).self > +5pp")], &d);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(fail_if::evaluate_diff(&[rule("diff.fn(came).self > +50pp")], &d).is_empty());
        for text in [
            "diff.fn(*).total < -5pp",
            "diff.span(*).p95 >= +10%",
            "diff.cpu > +5%",
        ] {
            fail_if(text.as_bytes());
        }
    }
}
