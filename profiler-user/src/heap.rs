//! The heap of a long-running profiler (`serve`, `agent`): what it holds stays what it
//! resides in.
//!
//! Each recording allocates large buffers (samples, stacks, symbol tables) and frees them
//! once written. glibc serves a large block by mmap and, when one is freed, raises its mmap
//! threshold to that block's size (up to 32 MiB), so from then on such buffers come from the
//! arenas instead. There they interleave with the few small blocks that outlive a recording,
//! which pin the pages around them. The serve test's 200 recordings failed three times on
//! that (RSS +7, +14 and +17 MB), and in a server sent 100 recording requests in a row (not
//! each awaited) the heap in use stayed at 14.3 MB while RssAnon went from 24 to 44 MB; with
//! the threshold fixed, 15 MB.

/// glibc's mmap threshold, fixed: set explicitly, glibc stops raising it. Blocks this large
/// or larger go back to the kernel as soon as they are freed.
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Called once, before the first recording.
pub fn for_long_running() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; called before other threads allocate
    // much, and glibc takes its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Gives the free pages of every arena back to the kernel (after a recording is written).
pub fn give_back_freed() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory to the kernel; it takes the arenas' locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bytes the allocator has handed out and not had back, over all arenas and mmapped blocks
/// (None where the allocator does not say): what the process holds, unlike RSS, which also
/// counts freed memory not yet returned.
pub fn in_use_bytes() -> Option<u64> {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics under its locks.
        let info = unsafe { libc::mallinfo2() };
        let held = info.uordblks.checked_add(info.hblkhd)?;
        u64::try_from(held).ok()
    }
    #[cfg(not(target_env = "gnu"))]
    None
}
