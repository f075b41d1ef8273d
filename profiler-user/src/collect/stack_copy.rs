//! How much user stack the kernel copies per DWARF sample of each thread.
//!
//! A 16 KiB copy per sample is most of a DWARF sample's kernel cost, while C and Rust threads
//! need under 1 KiB of it to unwind completely. Each thread's recent complete unwinds say what
//! it needs; the kernel copies twice the deepest of them (at least a page), and a sample that
//! ran out of copy doubles it at once. Threads userspace has not seen yet get the full
//! `--stack-size`.
use std::collections::HashMap;

use aya::maps::{HashMap as BpfHashMap, MapData};

/// Complete unwinds per window: the need is the deepest of this window and the last.
const WINDOW: u32 = 64;
const PAGE: u32 = 4096;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Thread {
    /// Deepest need in the window being filled, and in the one before it.
    deepest: u32,
    deepest_before: u32,
    seen: u32,
    /// The copy size the kernel has for this thread; 0: none set (the full size).
    set: u32,
}

impl Thread {
    /// What one unwind says: `used` bytes for a complete one, None for one that ran out of
    /// copy. Returns the new copy size when it should change.
    fn observe(&mut self, used: Option<u32>, full: u32) -> Option<u32> {
        let current = if self.set == 0 { full } else { self.set };
        let Some(used) = used else {
            // Grown at once: the next samples of a deeper stack are then complete.
            let grown = current.saturating_mul(2).min(full);
            return (grown != current).then(|| {
                self.set = grown;
                grown
            });
        };
        self.deepest = self.deepest.max(used);
        self.seen += 1;
        let need = self.deepest.max(self.deepest_before);
        let want = need
            .saturating_mul(2)
            .max(1)
            .div_ceil(PAGE)
            .saturating_mul(PAGE)
            .min(full);
        let window_done = self.seen >= WINDOW;
        if window_done {
            self.deepest_before = self.deepest;
            self.deepest = 0;
            self.seen = 0;
        }
        // Grow as soon as a need says so; shrink only at the end of a window, so a thread
        // whose depth alternates is not updated sample by sample.
        let change = want > current || (window_done && want < current);
        change.then(|| {
            self.set = want;
            want
        })
    }
}

pub struct StackCopy {
    map: BpfHashMap<MapData, u32, u32>,
    threads: HashMap<u32, Thread>,
    /// `--stack-size`.
    full: u32,
    /// Map updates refused (map full): those threads keep the full copy.
    pub refused: u64,
}

impl StackCopy {
    pub fn new(map: BpfHashMap<MapData, u32, u32>, full: u32) -> Self {
        Self {
            map,
            threads: HashMap::new(),
            full,
            refused: 0,
        }
    }

    /// One unwound sample of thread `tid`: `used` bytes for a complete unwind, None for one
    /// that needed bytes past its copy; other truncations say nothing about the copy.
    pub fn observe(&mut self, tid: u32, used: Option<u32>) {
        let full = self.full;
        let t = self.threads.entry(tid).or_default();
        if let Some(size) = t.observe(used, full)
            && self.map.insert(tid, size, 0).is_err()
        {
            self.refused += 1;
            // The kernel keeps copying what it copied before; unknown threads the full size.
            t.set = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: u32 = 32 << 10;

    #[test]
    fn shallow_threads_copy_a_page_and_deeper_needs_grow_at_once() {
        let mut t = Thread::default();
        assert_eq!(
            t.observe(Some(400), FULL),
            None,
            "full size until a window ends"
        );
        for _ in 1..WINDOW - 1 {
            assert_eq!(t.observe(Some(700), FULL), None);
        }
        assert_eq!(
            t.observe(Some(500), FULL),
            Some(PAGE),
            "twice 700 B: one page"
        );
        // Deeper than the margin: grown with the same unwind, to twice the need.
        assert_eq!(t.observe(Some(3000), FULL), Some(2 * PAGE));
        assert_eq!(t.observe(Some(3000), FULL), None);
        // A sample that ran out of copy doubles it, up to the full size.
        assert_eq!(t.observe(None, FULL), Some(4 * PAGE));
        assert_eq!(t.observe(None, FULL), Some(FULL));
        assert_eq!(t.observe(None, FULL), None);
    }

    #[test]
    fn shrinking_waits_for_two_windows_without_the_deep_need() {
        let mut t = Thread::default();
        for _ in 0..WINDOW {
            t.observe(Some(6000), FULL);
        }
        assert_eq!(t.set, 3 * PAGE);
        let mut changes = Vec::new();
        for _ in 0..2 * WINDOW {
            changes.extend(t.observe(Some(100), FULL));
        }
        // The window after the deep one still remembers it; the next one lets go.
        assert_eq!(changes, vec![PAGE]);
    }

    #[test]
    fn never_more_than_the_full_size() {
        let mut t = Thread::default();
        assert_eq!(t.observe(Some(u32::MAX), 8192), None);
        for _ in 0..WINDOW {
            t.observe(Some(u32::MAX), 8192);
        }
        assert!(t.set == 0 || t.set == 8192);
    }
}
