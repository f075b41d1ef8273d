//! Ring buffer records → events: the kernel programs' `#[repr(C)]` records, checked for size
//! and kind before they are read.
use profiler_common::{
    COMM_LEN, DwarfRegs, EventKind, OffCpuEvent, ProcessEvent, SAMPLE_DWARF_HEADER, SampleEvent,
    SampleInlineEvent, SpanEvent,
};

use super::{RawSample, RawStack};

/// One record from the ring buffer. A sample's thread name is None when the kernel did not
/// send it: the same CPU sent it with an earlier sample of that thread, and the thread has
/// not been renamed since.
#[derive(Clone, Debug)]
pub enum Event {
    Sample(RawSample, Option<String>),
    /// A sample to unwind: its registers and where its stack bytes are in the record.
    SampleDwarf(RawSample, Option<String>, DwarfRegs, std::ops::Range<usize>),
    Span(SpanEvent),
    Process(ProcessEvent),
    OffCpu(OffCpuEvent),
    /// The user stack of an off-CPU interval to unwind: its thread, its start (the
    /// interval's `begin_ns`), registers and where its stack bytes are in the record.
    OffCpuStack {
        tid: u32,
        begin_ns: u64,
        regs: DwarfRegs,
        stack: std::ops::Range<usize>,
    },
    Alloc(profiler_common::alloc::AllocEvent),
    /// A futex wait began: the event's head, its user registers, and where its stack bytes
    /// are in the record.
    LockWait(
        profiler_common::locks::LockWaitEvent,
        DwarfRegs,
        std::ops::Range<usize>,
    ),
    LockDone(profiler_common::locks::LockDoneEvent),
    /// A kernel lock wait, as a futex wait's.
    KernelLock(
        profiler_common::locks::KernelLockEvent,
        DwarfRegs,
        std::ops::Range<usize>,
    ),
}

/// A record sent as a [`profiler_common::SampleDwarfEvent`]: its head (a `SampleEvent`, or a
/// record of the same size), the registers, and where its stack bytes are. None when it is
/// shorter than its head and registers.
fn with_stack_copy<H: Copy>(bytes: &[u8]) -> Option<(H, DwarfRegs, std::ops::Range<usize>)> {
    const { assert!(size_of::<H>() == size_of::<SampleEvent>()) };
    if bytes.len() < SAMPLE_DWARF_HEADER {
        return None;
    }
    // SAFETY: length checked; both are plain old data (H by the callers' types, each
    // `#[repr(C)]` without padding), read unaligned.
    let (h, regs): (H, DwarfRegs) = unsafe {
        (
            std::ptr::read_unaligned(bytes.as_ptr().cast()),
            std::ptr::read_unaligned(bytes[size_of::<SampleEvent>()..].as_ptr().cast()),
        )
    };
    // stack_len comes from the record: bounded by the bytes that are really there.
    let end = SAMPLE_DWARF_HEADER
        .saturating_add(usize::try_from(regs.stack_len).unwrap_or(usize::MAX))
        .min(bytes.len());
    Some((h, regs, SAMPLE_DWARF_HEADER..end))
}

/// Decodes one ring buffer record; None for a record of unknown kind or size.
pub fn parse_event(bytes: &[u8]) -> Option<Event> {
    let kind = EventKind::from_u32(u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))?;
    let (header, user, kernel) = match kind {
        EventKind::ProcessFork | EventKind::ProcessExec | EventKind::ProcessExit => {
            if bytes.len() < size_of::<ProcessEvent>() {
                return None;
            }
            // SAFETY: length checked; ProcessEvent is plain old data, read unaligned.
            let e: ProcessEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            return Some(Event::Process(e));
        }
        EventKind::SpanBegin
        | EventKind::SpanEnd
        | EventKind::SpanEnter
        | EventKind::SpanExit
        | EventKind::SpanFnCall
        | EventKind::SpanFnReturn => {
            if bytes.len() < size_of::<SpanEvent>() {
                return None;
            }
            // SAFETY: length checked; SpanEvent is plain old data, read unaligned.
            let e: SpanEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            return Some(Event::Span(e));
        }
        EventKind::SampleDwarf | EventKind::OffCpuStack => {
            let (h, regs, stack) = with_stack_copy::<SampleEvent>(bytes)?;
            if kind == EventKind::OffCpuStack {
                return Some(Event::OffCpuStack {
                    tid: h.tid,
                    begin_ns: h.timestamp_ns,
                    regs,
                    stack,
                });
            }
            let (sample, comm) =
                raw_sample(&h, RawStack::Empty, RawStack::from_id(h.kernel_stack_id));
            return Some(Event::SampleDwarf(sample, comm, regs, stack));
        }
        EventKind::OffCpu => {
            if bytes.len() < size_of::<OffCpuEvent>() {
                return None;
            }
            // SAFETY: length checked; OffCpuEvent is plain old data, read unaligned.
            let e: OffCpuEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            return Some(Event::OffCpu(e));
        }
        EventKind::Alloc => {
            if bytes.len() < size_of::<profiler_common::alloc::AllocEvent>() {
                return None;
            }
            // SAFETY: length checked; AllocEvent is plain old data, read unaligned.
            let e = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            return Some(Event::Alloc(e));
        }
        EventKind::LockWait => {
            let (e, regs, stack) = with_stack_copy(bytes)?;
            return Some(Event::LockWait(e, regs, stack));
        }
        EventKind::KernelLock => {
            let (e, regs, stack) = with_stack_copy(bytes)?;
            return Some(Event::KernelLock(e, regs, stack));
        }
        EventKind::LockDone => {
            if bytes.len() < size_of::<profiler_common::locks::LockDoneEvent>() {
                return None;
            }
            // SAFETY: length checked; LockDoneEvent is plain old data, read unaligned.
            let e = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            return Some(Event::LockDone(e));
        }
        EventKind::Sample => {
            if bytes.len() < size_of::<SampleEvent>() {
                return None;
            }
            // SAFETY: length checked; SampleEvent is plain old data, read unaligned.
            let h: SampleEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            (
                h,
                RawStack::from_id(h.user_stack_id),
                RawStack::from_id(h.kernel_stack_id),
            )
        }
        EventKind::SampleInline => {
            if bytes.len() < size_of::<SampleInlineEvent>() {
                return None;
            }
            // SAFETY: length checked; SampleInlineEvent is plain old data, read unaligned.
            let e: SampleInlineEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            let frames = |all: &[u64], len: u32| {
                let v: Vec<u64> = all[..(len as usize).min(all.len())].to_vec();
                if v.is_empty() {
                    RawStack::Empty
                } else {
                    RawStack::Inline(v)
                }
            };
            (
                e.header,
                frames(&e.user, e.user_len),
                frames(&e.kernel, e.kernel_len),
            )
        }
    };
    let (sample, comm) = raw_sample(&header, user, kernel);
    Some(Event::Sample(sample, comm))
}

fn raw_sample(
    header: &SampleEvent,
    user: RawStack,
    kernel: RawStack,
) -> (RawSample, Option<String>) {
    let comm_len = header.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    let comm =
        (comm_len > 0).then(|| String::from_utf8_lossy(&header.comm[..comm_len]).into_owned());
    (
        RawSample {
            timestamp_ns: header.timestamp_ns,
            pid: header.pid,
            tid: header.tid,
            cpu: header.cpu,
            user,
            kernel,
            span_id: header.span_id,
            space: 0,
            truncated: false,
        },
        comm,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use profiler_common::SampleInlineEvent;

    fn header(kind: EventKind) -> SampleEvent {
        let mut comm = [0u8; COMM_LEN];
        comm[..6].copy_from_slice(b"worker");
        SampleEvent {
            kind: kind as u32,
            cpu: 1,
            timestamp_ns: 123,
            pid: 10,
            tid: 11,
            user_stack_id: 5,
            kernel_stack_id: -14,
            comm,
            span_id: 9,
        }
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-old-data value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn sample(bytes: &[u8]) -> (RawSample, Option<String>) {
        match parse_event(bytes) {
            Some(Event::Sample(s, comm)) => (s, comm),
            other => panic!("not a sample: {other:?}"),
        }
    }

    #[test]
    fn parses_span_events() {
        let e = SpanEvent {
            kind: EventKind::SpanBegin as u32,
            cpu: 1,
            timestamp_ns: 5,
            pid: 10,
            tid: 11,
            span_id: 7,
            parent_id: 3,
            meta: 0x1000,
        };
        match parse_event(&bytes_of(&e)) {
            Some(Event::Span(got)) => assert_eq!(got, e),
            other => panic!("not a span event: {other:?}"),
        }
        assert!(parse_event(&bytes_of(&e)[..40]).is_none());
    }

    #[test]
    fn parses_plain_sample() {
        let (s, comm) = sample(&bytes_of(&header(EventKind::Sample)));
        assert_eq!((s.pid, s.tid, s.cpu, s.timestamp_ns), (10, 11, 1, 123));
        assert_eq!(s.user, RawStack::Id(5));
        assert_eq!(s.kernel, RawStack::Empty);
        assert_eq!(s.span_id, 9);
        assert_eq!(comm.as_deref(), Some("worker"));
    }

    /// A sample whose thread name this CPU already sent carries none: it must not rename
    /// the thread to "".
    #[test]
    fn sample_without_a_name_has_none() {
        let mut h = header(EventKind::Sample);
        h.comm = [0; COMM_LEN];
        let (s, comm) = sample(&bytes_of(&h));
        assert_eq!((s.pid, s.tid), (10, 11));
        assert_eq!(comm, None);
    }

    #[test]
    fn parses_inline_sample() {
        let mut e = SampleInlineEvent {
            header: header(EventKind::SampleInline),
            user_len: 2,
            kernel_len: 0,
            user: [0; profiler_common::MAX_STACK_DEPTH],
            kernel: [0; profiler_common::MAX_STACK_DEPTH],
        };
        e.user[0] = 0x1000;
        e.user[1] = 0x2000;
        let (s, _) = sample(&bytes_of(&e));
        assert_eq!(s.user, RawStack::Inline(vec![0x1000, 0x2000]));
        assert_eq!(s.kernel, RawStack::Empty);
    }

    #[test]
    fn a_dwarf_stack_length_is_bounded_by_the_record() {
        let mut b = bytes_of(&header(EventKind::SampleDwarf));
        let regs = profiler_common::DwarfRegs {
            ip: 1,
            sp: 2,
            bp: 3,
            stack_len: u32::MAX,
            source: 0,
        };
        b.extend(bytes_of(&regs));
        b.extend([7u8; 40]);
        match parse_event(&b) {
            Some(Event::SampleDwarf(_, _, r, stack)) => {
                assert_eq!(r.stack_len, u32::MAX);
                assert_eq!(stack, SAMPLE_DWARF_HEADER..SAMPLE_DWARF_HEADER + 40);
            }
            other => panic!("not a DWARF sample: {other:?}"),
        }
        // A header cut short is refused.
        assert!(parse_event(&b[..SAMPLE_DWARF_HEADER - 1]).is_none());
    }

    #[test]
    fn an_off_cpu_stack_names_its_interval_and_is_bounded_by_the_record() {
        let mut h = header(EventKind::OffCpuStack);
        h.timestamp_ns = 5_000;
        let mut b = bytes_of(&h);
        let regs = profiler_common::DwarfRegs {
            ip: 1,
            sp: 2,
            bp: 3,
            stack_len: 4096,
            source: profiler_common::dwarf_regs::TASK,
        };
        b.extend(bytes_of(&regs));
        b.extend([7u8; 24]);
        match parse_event(&b) {
            Some(Event::OffCpuStack {
                tid,
                begin_ns,
                regs: r,
                stack,
            }) => {
                assert_eq!((tid, begin_ns), (11, 5_000));
                assert_eq!((r.ip, r.sp, r.bp), (1, 2, 3));
                assert_eq!(stack, SAMPLE_DWARF_HEADER..SAMPLE_DWARF_HEADER + 24);
            }
            other => panic!("not an off-CPU stack: {other:?}"),
        }
        assert!(parse_event(&b[..SAMPLE_DWARF_HEADER - 1]).is_none());
    }

    #[test]
    fn parses_alloc_events() {
        let e = profiler_common::alloc::AllocEvent {
            kind: EventKind::Alloc as u32,
            pid: 10,
            tid: 11,
            size: 4096,
            addr: 0x5000,
            seq: 3,
            caller: 0x401000,
            user_stack_id: 2,
            tracked: 1,
            ..Default::default()
        };
        match parse_event(&bytes_of(&e)) {
            Some(Event::Alloc(got)) => assert_eq!(got, e),
            other => panic!("not an allocation: {other:?}"),
        }
        assert!(parse_event(&bytes_of(&e)[..72]).is_none());
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let b = bytes_of(&header(EventKind::Sample));
        assert!(parse_event(&b[..20]).is_none());
        assert!(parse_event(&[9, 0, 0, 0, 0, 0, 0, 0]).is_none());
        assert!(parse_event(&[]).is_none());
    }
}
