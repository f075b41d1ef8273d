//! How much user stack the kernel copies per DWARF sample, thread by thread (and per
//! off-CPU interval or lock wait of that thread, whose unwinds size it too).
//!
//! The copy is most of a DWARF sample's cost in the kernel, and most threads' stacks need a
//! few KiB of the 16 KiB `--stack-size` allows (issue 17). Each thread starts with the full
//! copy; once a few of its unwinds have completed, it gets what the deepest of them read
//! plus a margin. An unwind that runs off the end of a copy cut short gives that thread the
//! full copy again, and its copy never shrinks below twice the one found too short.
//!
//! A copy that runs past the top of the stack fails whole in the kernel, which then copies
//! page by page up to the top and says so: the thread's top is kept beside its size, so
//! that its next copies stop there (a main thread with a small environment has its top
//! within a few KiB of its deepest frames).
use std::collections::HashMap;

use profiler_common::dwarf_copy;

use aya::maps::{HashMap as BpfHashMap, MapData};

/// Complete unwinds of a thread between two sizings.
const WINDOW: u32 = 16;
/// Room above the deepest recent unwind, at least: a call a few frames deeper than any seen
/// still unwinds whole.
const MARGIN_BYTES: u32 = 2048;
/// Copies are sized in whole KiB, so that small changes in depth write nothing.
const STEP: u32 = 1024;
/// Threads sized at once here; beyond it, the least recently seen are forgotten (and keep
/// their size in the kernel's LRU map until it evicts them).
const MAX_THREADS: usize = 16384;

#[derive(Clone, Copy, Debug)]
struct Thread {
    /// Bytes the kernel copies for it now.
    bytes: u32,
    /// Never less: twice a copy an unwind ran off.
    floor: u32,
    /// Where its stack ends, when a copy found it; 0 when not known.
    top: u64,
    /// Deepest complete unwind of this window, and how many completed in it.
    deepest: u32,
    complete: u32,
    last_seen: u64,
}

/// What the unwinder found in one sample's copy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    /// Complete, reading this many bytes above `sp`.
    Complete(u32),
    /// Ran past the end of the copy, which had not reached the top of the stack.
    OutOfCopy,
    /// Ran past the end of a copy that reached the top of the stack ([`Copy::reached_top`]):
    /// the unwind information led past it, or the top was remembered wrongly.
    PastEnd,
    /// Stopped for another reason: says nothing about the copy's size.
    Other,
}

/// One sample's copy, as the kernel made it.
#[derive(Clone, Copy, Debug)]
pub struct Copy {
    pub sp: u64,
    pub len: u32,
    /// The kernel could not read the page after it (`dwarf_regs::STACK_END`).
    pub at_stack_end: bool,
    /// The kernel stopped it at the top userspace had told it (`dwarf_regs::AT_TOP`).
    pub at_top: bool,
}

impl Copy {
    /// Whether the copy ended at the top of the stack, as the kernel says: it found the next
    /// page unreadable, or stopped at the thread's known top. Ending on a page boundary says
    /// nothing by itself: where `sp` lies in its page is chance, and a thread looping at one
    /// depth puts every copy there in one run of 256. Nor does what userspace remembers now:
    /// the kernel may have cut the copy at a top since forgotten (a thread evicted, an exec).
    pub fn reached_top(&self) -> bool {
        self.len == 0 || self.at_stack_end || self.at_top
    }
}

/// Per-thread copy sizes, and the changes the kernel's map has not been told yet.
pub struct Sizes {
    most: u32,
    threads: HashMap<u32, Thread>,
    changed: HashMap<u32, u64>,
    seen: u64,
}

impl Sizes {
    /// `most`: `--stack-size`, what a thread not sized yet gets.
    pub fn new(most: u32) -> Self {
        Self {
            most,
            threads: HashMap::new(),
            changed: HashMap::new(),
            seen: 0,
        }
    }

    /// Learns from one unwound sample of `tid`. True when the unwind ran off a copy this
    /// sizing had cut short (a sample the full copy would have unwound further).
    pub fn observe(&mut self, tid: u32, copy: Copy, outcome: Outcome) -> bool {
        self.seen = self.seen.wrapping_add(1);
        let most = self.most;
        let t = self.threads.entry(tid).or_insert(Thread {
            bytes: most,
            floor: 0,
            top: 0,
            deepest: 0,
            complete: 0,
            last_seen: 0,
        });
        t.last_seen = self.seen;
        let before = (t.bytes, t.top);
        let end = copy.sp.saturating_add(u64::from(copy.len));
        if copy.at_stack_end && copy.len > 0 {
            t.top = end;
        }
        let mut cut_short = false;
        let mut tell = false;
        match outcome {
            Outcome::Complete(used) => {
                t.deepest = t.deepest.max(used);
                t.complete = t.complete.saturating_add(1);
                if t.complete >= WINDOW {
                    let want = t
                        .deepest
                        .saturating_add(MARGIN_BYTES.max(t.deepest / 2))
                        .div_ceil(STEP)
                        .saturating_mul(STEP);
                    t.bytes = want.max(t.floor).min(most);
                    t.deepest = 0;
                    t.complete = 0;
                }
            }
            // Back to the full copy at once: the samples taken until the kernel hears of it
            // (a drain period, ~100 ms) are all cut short, so a doubling at a time would lose
            // that many at each step. The next sizing starts from the complete unwinds again,
            // never below twice the copy found short, so a thread whose depth comes and goes
            // settles after a few misses. The copy the kernel made counts, not the size asked
            // for now: samples already in flight were copied at an older size.
            Outcome::OutOfCopy if copy.len < most => {
                cut_short = true;
                t.floor = t.floor.max(copy.len.saturating_mul(2).min(most));
                t.bytes = most;
                t.deepest = 0;
                t.complete = 0;
            }
            // Stopped by the top the kernel was told, not by the kernel finding it: that top
            // may be wrong (a tid reused), and is forgotten; a real one is found again. The
            // kernel is told even when this side had forgotten it already (the thread evicted
            // here but not from the kernel's map). A late copy (an off-CPU one waits for its
            // interval's end) cut at an older top leaves a newer one alone.
            Outcome::PastEnd
                if copy.at_top && !copy.at_stack_end && (t.top == 0 || t.top == end) =>
            {
                cut_short = true;
                t.top = 0;
                tell = true;
            }
            Outcome::OutOfCopy | Outcome::PastEnd | Outcome::Other => {}
        }
        if tell || (t.bytes, t.top) != before {
            self.changed.insert(tid, dwarf_copy::pack(t.bytes, t.top));
        }
        if self.threads.len() > MAX_THREADS {
            self.forget_oldest();
        }
        cut_short
    }

    /// A thread that ran `exec`: a new stack, whose size and top are learned afresh (the
    /// kernel dropped its entry).
    pub fn forget(&mut self, tid: u32) {
        self.threads.remove(&tid);
        self.changed.remove(&tid);
    }

    fn forget_oldest(&mut self) {
        let keep_after = self.seen.saturating_sub(MAX_THREADS as u64 / 2);
        self.threads.retain(|_, t| t.last_seen > keep_after);
    }

    /// Tells the kernel the sizes that changed. An update refused (the LRU map evicts rather
    /// than refuse) leaves a thread at its previous size: a cost, never a sample lost.
    pub fn flush(&mut self, map: &mut BpfHashMap<MapData, u32, u64>) {
        for (tid, value) in self.changed.drain() {
            let _ = map.insert(tid, value, 0);
        }
    }

    #[cfg(test)]
    fn bytes(&self, tid: u32) -> u32 {
        self.threads.get(&tid).map_or(self.most, |t| t.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOST: u32 = 16384;
    const SP: u64 = 0x7ffd_0000_1230;

    /// A copy of `len` bytes that did not reach the stack's end.
    fn c(len: u32) -> Copy {
        Copy {
            sp: SP,
            len,
            at_stack_end: false,
            at_top: false,
        }
    }

    #[test]
    fn a_thread_keeps_the_full_copy_until_a_window_of_unwinds_completed() {
        let mut s = Sizes::new(MOST);
        for _ in 0..WINDOW - 1 {
            s.observe(7, c(MOST), Outcome::Complete(900));
        }
        assert_eq!(s.bytes(7), MOST);
        assert!(s.changed.is_empty());
        s.observe(7, c(MOST), Outcome::Complete(1500));
        // 1500 + 2048, in whole KiB.
        assert_eq!(s.bytes(7), 4096);
        assert_eq!(s.changed.get(&7), Some(&dwarf_copy::pack(4096, 0)));
    }

    #[test]
    fn a_deep_stack_keeps_half_again_as_margin_and_never_more_than_the_limit() {
        let mut s = Sizes::new(MOST);
        for _ in 0..WINDOW {
            s.observe(1, c(MOST), Outcome::Complete(8000));
        }
        assert_eq!(s.bytes(1), 12288);
        for _ in 0..WINDOW {
            s.observe(2, c(MOST), Outcome::Complete(15000));
        }
        assert_eq!(s.bytes(2), MOST);
    }

    #[test]
    fn running_off_a_short_copy_restores_the_full_copy_and_sets_a_floor() {
        let mut s = Sizes::new(MOST);
        for _ in 0..WINDOW {
            s.observe(3, c(MOST), Outcome::Complete(100));
        }
        assert_eq!(s.bytes(3), 3072);
        assert!(s.observe(3, c(3072), Outcome::OutOfCopy));
        assert_eq!(s.bytes(3), MOST);
        // Shallow unwinds again: the copy shrinks, but not below twice the one found short.
        for _ in 0..WINDOW {
            s.observe(3, c(MOST), Outcome::Complete(100));
        }
        assert_eq!(s.bytes(3), 6144);
    }

    #[test]
    fn running_off_the_full_copy_is_no_sizing_miss() {
        let mut s = Sizes::new(MOST);
        assert!(!s.observe(4, c(MOST), Outcome::OutOfCopy));
        assert!(!s.observe(4, c(MOST), Outcome::Other));
        assert_eq!(s.bytes(4), MOST);
        assert!(s.changed.is_empty());
    }

    #[test]
    fn a_miss_in_the_middle_of_a_window_starts_the_window_again() {
        let mut s = Sizes::new(MOST);
        for _ in 0..WINDOW {
            s.observe(5, c(MOST), Outcome::Complete(100));
        }
        for _ in 0..WINDOW - 1 {
            s.observe(5, c(3072), Outcome::Complete(200));
        }
        assert!(s.observe(5, c(3072), Outcome::OutOfCopy));
        // Samples copied at the old size are still in flight: their complete unwinds count
        // towards the next sizing, whose result stays above the floor.
        for _ in 0..WINDOW {
            s.observe(5, c(3072), Outcome::Complete(300));
        }
        assert_eq!(s.bytes(5), 6144);
    }

    #[test]
    fn threads_are_sized_apart_and_the_oldest_forgotten_beyond_the_bound() {
        let mut s = Sizes::new(MOST);
        for tid in 0..(MAX_THREADS as u32 + 1) {
            s.observe(tid, c(MOST), Outcome::Other);
        }
        assert!(s.threads.len() <= MAX_THREADS);
        assert!(s.threads.contains_key(&(MAX_THREADS as u32)));
        assert!(!s.threads.contains_key(&0));
    }

    #[test]
    fn only_the_kernel_says_a_copy_reached_the_top() {
        // The full copy, from an `sp` whose page offset makes it end on a page boundary: the
        // size asked for ended it, not the stack.
        let sp = 0x7ffd_0000_2000 - u64::from(MOST);
        let full = Copy {
            sp,
            len: MOST,
            at_stack_end: false,
            at_top: false,
        };
        assert_eq!((full.sp + u64::from(full.len)) % 4096, 0);
        assert!(!full.reached_top());
        // A 512-byte --stack-size likewise.
        let small = Copy {
            sp: 0x7ffd_0000_2000 - 512,
            len: 512,
            ..full
        };
        assert!(!small.reached_top());
        assert!(
            Copy {
                at_stack_end: true,
                ..small
            }
            .reached_top()
        );
        assert!(
            Copy {
                at_top: true,
                ..small
            }
            .reached_top()
        );
        assert!(c(0).reached_top());
    }

    #[test]
    fn a_wrong_top_this_side_forgot_is_still_taken_back_from_the_kernel() {
        let mut s = Sizes::new(MOST);
        // Evicted here, its entry still in the kernel's map: a copy cut at that top, which
        // the unwinder wanted past, tells the kernel to drop it though nothing changed here.
        let cut = Copy {
            at_top: true,
            ..c(2048)
        };
        assert!(s.observe(9, cut, Outcome::PastEnd));
        assert_eq!(s.changed.get(&9), Some(&dwarf_copy::pack(MOST, 0)));
        // A newer top found since, then a late copy cut at the old one: the new top stays.
        let top = SP + 8192;
        let found = Copy {
            at_stack_end: true,
            ..c(8192)
        };
        s.observe(9, found, Outcome::Complete(100));
        s.changed.clear();
        assert!(!s.observe(9, cut, Outcome::PastEnd));
        assert!(s.changed.is_empty());
        // Nor does a copy the kernel did not cut at a top.
        assert!(!s.observe(9, c(2048), Outcome::PastEnd));
        assert!(s.changed.is_empty());
        assert_eq!(s.threads[&9].top, top);
    }

    #[test]
    fn a_copy_that_found_the_stack_end_sets_the_top_and_a_wrong_top_is_forgotten() {
        let mut s = Sizes::new(MOST);
        // The kernel's page-by-page copy ends on a page boundary.
        let top = 0x7ffd_0000_2000;
        let ended = Copy {
            sp: SP,
            len: (top - SP) as u32,
            at_stack_end: true,
            at_top: false,
        };
        s.observe(6, ended, Outcome::Complete(400));
        assert_eq!(s.changed.get(&6), Some(&dwarf_copy::pack(MOST, top)));
        assert_eq!(dwarf_copy::top(dwarf_copy::pack(MOST, top)), top);
        // A later copy stopped at that top by the kernel's own limit, and the unwinder
        // wanted more: the top is dropped.
        s.changed.clear();
        let limited = Copy {
            at_stack_end: false,
            at_top: true,
            ..ended
        };
        assert!(s.observe(6, limited, Outcome::PastEnd));
        assert_eq!(s.changed.get(&6), Some(&dwarf_copy::pack(MOST, 0)));
        // The kernel finding the end again restores it.
        s.observe(6, ended, Outcome::PastEnd);
        assert_eq!(s.changed.get(&6), Some(&dwarf_copy::pack(MOST, top)));
    }

    #[test]
    fn an_exec_forgets_the_thread() {
        let mut s = Sizes::new(MOST);
        for _ in 0..WINDOW {
            s.observe(8, c(MOST), Outcome::Complete(100));
        }
        s.forget(8);
        assert!(s.changed.is_empty());
        assert_eq!(s.bytes(8), MOST);
    }
}
