//! The profiler reads the files its targets map through memory mappings (its module store,
//! and blazesym's own), and a file that shrinks on disk while mapped turns every read of a page
//! past its new end into SIGBUS, which kills the process: one `cp` over a loaded library, or a
//! target in a container cutting its own file on purpose, would cost a root profiler (and a
//! sidecar watching every process) its whole recording. The checks before each read
//! ([`crate::collect::modules::ModuleFile::rewritten`]) cannot close the gap: the file can
//! shrink between the check and the read, and the DWARF unwinder reads tables on every sample.
//!
//! [`install`] makes such a page read as zeros instead: the handler maps an anonymous page over
//! it and the read is retried. Readers of these files already take any bytes (the fuzzer's
//! `module` target), so zeros cost what the cut-off part of the file would have given, and
//! every page is counted and reported ([`take`]), by file where the address is one of ours.
//! Only a read of data is handled, at a `BUS_ADRERR` fault (past the end of the file mapped
//! there; an I/O error reading a file page is the same to the kernel), outside the files the
//! profiler itself runs from. A write, an instruction fetch, a fault in the profiler's own
//! image or a SIGBUS another process sent goes where it went before: the handler installed
//! before (std's), or the default action.
use std::sync::{
    Once, OnceLock,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

/// Fault addresses kept between two [`take`]s; beyond it only the count is exact.
const KEPT: usize = 64;
/// File mappings of the profiler's own image kept out of the handler's reach.
const OWN: usize = 64;

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);
/// Faults claimed (a slot each) and faults whose address is stored: [`take`] reads up to the
/// second, so it never reads a slot still being written.
static CLAIMED: AtomicU64 = AtomicU64::new(0);
static FAULTS: AtomicU64 = AtomicU64::new(0);
static TAKEN: AtomicU64 = AtomicU64::new(0);
/// Each slot's address, and the number of the fault that wrote it (plus one).
static ADDRESSES: [AtomicUsize; KEPT] = [const { AtomicUsize::new(0) }; KEPT];
static WRITTEN_BY: [AtomicU64; KEPT] = [const { AtomicU64::new(0) }; KEPT];
static OWN_RANGES: [(AtomicUsize, AtomicUsize); OWN] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; OWN];
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static INSTALL: Once = Once::new();

/// Installs the handler (once; later calls do nothing). Returns whether it is in place.
pub fn install() -> bool {
    INSTALL.call_once(|| {
        let _ = install_once();
    });
    PREVIOUS.get().is_some()
}

fn install_once() -> Option<()> {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    if !page.is_power_of_two() {
        return None;
    }
    PAGE_SIZE.store(page, Ordering::Relaxed);
    // The files code runs from now are the profiler's own (its executable, libc, the
    // loader): a fault there is no target's doing, and zeros in our own code or constants
    // would be a lie.
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let own = crate::collect::procfs::code_file_ranges(&maps);
    for (slot, (start, end)) in OWN_RANGES.iter().zip(own) {
        slot.0.store(start, Ordering::Relaxed);
        slot.1.store(end, Ordering::Relaxed);
    }
    // SAFETY: zeroed is a valid sigaction (no handler, empty mask) before the fields are set;
    // sigaction gets valid pointers, and the handler has the SA_SIGINFO signature.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
        // On the alternate stack std sets up for its own SIGSEGV/SIGBUS handler, so a fault
        // near the end of a thread's stack still reaches the handler it chains to.
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, &action, &mut previous) != 0 {
            return None;
        }
        // A SIGBUS before this line finds it unset and takes the default action, as it would
        // have without us.
        let _ = PREVIOUS.set(previous);
    }
    Some(())
}

extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; si_addr is the
    // faulting address for SIGBUS.
    let (code, address) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code <= 0 {
        // Sent (kill, sigqueue), not a fault: returning would drop it, as std's handler does.
        default_and_raise(signal);
        return;
    }
    let page = PAGE_SIZE.load(Ordering::Relaxed);
    if code == libc::BUS_ADRERR
        && address != 0
        && page != 0
        && reading_data(context)
        && !is_own(address)
    {
        let start = address & !(page - 1);
        // SAFETY: replaces one page that can no longer be read (past the end of its file) with
        // a zero page, read-only as every mapping of ours that reads files is; the mapping that
        // held it still owns the range and unmaps it whole. mmap is async-signal-safe.
        let zero = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if zero != libc::MAP_FAILED {
            let n = CLAIMED.fetch_add(1, Ordering::Relaxed);
            // A sequence lock per slot: unstamped while the address changes.
            WRITTEN_BY[slot(n)].store(0, Ordering::Relaxed);
            std::sync::atomic::fence(Ordering::Release);
            ADDRESSES[slot(n)].store(address, Ordering::Relaxed);
            WRITTEN_BY[slot(n)].store(n.wrapping_add(1), Ordering::Release);
            FAULTS.fetch_add(1, Ordering::Release);
            return;
        }
    }
    chain(signal, info, context);
}

/// Whether the fault was a read of data: the page-fault error code the kernel saves in the
/// signal frame has a bit for a write (2) and one for an instruction fetch (16).
#[cfg(target_arch = "x86_64")]
fn reading_data(context: *mut libc::c_void) -> bool {
    if context.is_null() {
        return false;
    }
    // SAFETY: an SA_SIGINFO handler's third argument is the interrupted ucontext.
    let error =
        unsafe { (*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_ERR as usize] };
    error & (2 | 16) == 0
}

// Elsewhere every fault counts as a read: nothing of ours writes to or runs from a target's
// file, and a write would then fault again on the read-only zero page (SIGSEGV).
#[cfg(not(target_arch = "x86_64"))]
fn reading_data(_context: *mut libc::c_void) -> bool {
    true
}

fn is_own(address: usize) -> bool {
    OWN_RANGES.iter().any(|(start, end)| {
        let (start, end) = (start.load(Ordering::Relaxed), end.load(Ordering::Relaxed));
        start <= address && address < end
    })
}

fn restore_default(signal: libc::c_int) {
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags); sigaction is
    // async-signal-safe.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(signal, &default, std::ptr::null_mut());
    }
}

fn default_and_raise(signal: libc::c_int) {
    restore_default(signal);
    // SAFETY: sends the signal again to this thread; async-signal-safe.
    unsafe { libc::raise(signal) };
}

/// Hands a fault this module does not handle to the handler installed before, or to the
/// default action: restored, it takes effect when the faulting instruction runs again.
fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let previous = PREVIOUS.get();
    let handler = previous.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
    if handler == libc::SIG_DFL
        || handler == libc::SIG_IGN
        || handler == on_sigbus as *const () as libc::sighandler_t
    {
        // A SIGBUS ignored here would fault forever, so it gets the default too.
        restore_default(signal);
        return;
    }
    let siginfo = previous.is_some_and(|p| p.sa_flags & libc::SA_SIGINFO != 0);
    // SAFETY: `handler` is the address of the function registered before us, with the
    // signature its flags declare.
    unsafe {
        if siginfo {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(handler);
            f(signal, info, context);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            f(signal);
        }
    }
}

/// The pages that read as zeros since the last `take`, and the addresses of (up to
/// [`KEPT`] of) them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Faults {
    pub pages: u64,
    pub addresses: Vec<usize>,
}

/// Faults since the last call: each is reported once, whichever recording (or agent window)
/// asks first.
pub fn take() -> Faults {
    let now = FAULTS.load(Ordering::Acquire);
    // Never backwards: of two takes at once, the later count wins, and what it covers is
    // told by one of them only.
    let before = TAKEN.fetch_max(now, Ordering::Relaxed);
    if before >= now {
        return Faults::default();
    }
    Faults {
        pages: now - before,
        // Best effort: a slot still being written, or written again by a fault 64 later while
        // it was read, gives no address; the count is exact.
        addresses: kept_between(before, now)
            .filter_map(|n| {
                let stamp = n.wrapping_add(1);
                if WRITTEN_BY[slot(n)].load(Ordering::Acquire) != stamp {
                    return None;
                }
                let address = ADDRESSES[slot(n)].load(Ordering::Relaxed);
                std::sync::atomic::fence(Ordering::Acquire);
                (WRITTEN_BY[slot(n)].load(Ordering::Relaxed) == stamp).then_some(address)
            })
            .collect(),
    }
}

/// The faults numbered `before..now` whose address is still kept: the last [`KEPT`].
fn kept_between(before: u64, now: u64) -> std::ops::Range<u64> {
    now.saturating_sub(KEPT as u64).max(before)..now
}

fn slot(n: u64) -> usize {
    (n % KEPT as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    // Other tests symbolize, which takes the faults: this one reads the counter itself.
    #[test]
    fn a_page_cut_off_a_mapped_file_reads_as_zeros_and_is_counted() {
        assert!(install());
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).expect("page");
        let path = std::env::temp_dir().join(format!("sigbus-test-{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create");
        f.write_all(&vec![7u8; 3 * page]).expect("write");
        // SAFETY: a file this test alone writes; it is cut below on purpose.
        let map = unsafe { memmap2::Mmap::map(&f) }.expect("map");
        assert_eq!(map[2 * page], 7);
        f.set_len(page as u64).expect("shrink");
        let before = FAULTS.load(Ordering::Relaxed);
        // Without the handler, this read kills the test process.
        let read = std::hint::black_box(&map[..])[2 * page + 5];
        assert_eq!(read, 0);
        assert_eq!(map[2 * page + 6], 0, "the page stays readable");
        assert_eq!(map[0], 7, "the page the file kept is its own");
        let now = FAULTS.load(Ordering::Relaxed);
        assert_eq!(now - before, 1);
        assert_eq!(
            ADDRESSES[slot(before)].load(Ordering::Relaxed),
            map.as_ptr() as usize + 2 * page + 5
        );
        drop(map);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn only_the_last_addresses_are_kept_and_each_is_told_once() {
        assert_eq!(kept_between(0, 3), 0..3);
        assert_eq!(kept_between(3, 3), 3..3);
        assert_eq!(kept_between(10, 200), 136..200);
        assert_eq!(kept_between(150, 200), 150..200);
        assert_eq!(slot(KEPT as u64 + 1), 1);
    }
}
