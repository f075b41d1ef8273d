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
//! Only `BUS_ADRERR` (an address past the end of the object mapped there) is handled; every
//! other SIGBUS goes to the handler installed before.
use std::sync::{
    OnceLock,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

/// Fault addresses kept between two [`take`]s; beyond it only the count is exact.
const KEPT: usize = 64;

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);
static FAULTS: AtomicU64 = AtomicU64::new(0);
static TAKEN: AtomicU64 = AtomicU64::new(0);
static ADDRESSES: [AtomicUsize; KEPT] = [const { AtomicUsize::new(0) }; KEPT];
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// Installs the handler (once; later calls do nothing). Returns whether it is in place.
pub fn install() -> bool {
    if PREVIOUS.get().is_some() {
        return true;
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let Ok(page) = usize::try_from(page) else {
        return false;
    };
    if !page.is_power_of_two() {
        return false;
    }
    PAGE_SIZE.store(page, Ordering::Relaxed);
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
            return false;
        }
        // Set before any fault can reach the handler's fall-back path: only this thread
        // installs, and a SIGBUS before the line below would find it unset and take the
        // default action, as it would have without us.
        let _ = PREVIOUS.set(previous);
    }
    true
}

extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; si_addr is the
    // faulting address for SIGBUS.
    let (code, address) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    let page = PAGE_SIZE.load(Ordering::Relaxed);
    if code == libc::BUS_ADRERR && address != 0 && page != 0 {
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
            let n = FAULTS.fetch_add(1, Ordering::Relaxed);
            ADDRESSES[slot(n)].store(address, Ordering::Relaxed);
            return;
        }
    }
    chain(signal, info, context);
}

/// Hands a SIGBUS this module does not handle to the handler installed before, or to the
/// default action: restored, it takes effect when the faulting instruction runs again.
fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let previous = PREVIOUS.get();
    let handler = previous.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // SAFETY: restores the default action with a zeroed (valid, empty) sigaction; a
        // SIGBUS ignored here would fault forever, so it gets the default too.
        unsafe {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(signal, &default, std::ptr::null_mut());
        }
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
    let now = FAULTS.load(Ordering::Relaxed);
    let before = TAKEN.swap(now, Ordering::Relaxed);
    Faults {
        pages: now.saturating_sub(before),
        addresses: kept_between(before, now)
            .map(|n| ADDRESSES[slot(n)].load(Ordering::Relaxed))
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
