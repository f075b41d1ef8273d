//! Side-band records, the way `perf record` gets them: a software dummy perf event on every
//! CPU that samples nothing but makes the kernel report every executable mapping (MMAP2),
//! exec (COMM with the exec flag), fork and exit as they happen, stamped on CLOCK_BOOTTIME
//! like the samples. A process that lives 5 ms is then described by the kernel itself, not
//! by a read of /proc that has to win a race against its exit.
use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicU64, Ordering},
};

use crate::error::{Error, Result};

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_DUMMY: u64 = 9;
const PERF_SAMPLE_TID: u64 = 1 << 1;
const PERF_SAMPLE_TIME: u64 = 1 << 2;

const ATTR_DISABLED: u64 = 1 << 0;
const ATTR_MMAP: u64 = 1 << 8;
const ATTR_COMM: u64 = 1 << 9;
const ATTR_TASK: u64 = 1 << 13;
const ATTR_WATERMARK: u64 = 1 << 14;
const ATTR_SAMPLE_ID_ALL: u64 = 1 << 18;
const ATTR_MMAP2: u64 = 1 << 23;
const ATTR_COMM_EXEC: u64 = 1 << 24;
const ATTR_USE_CLOCKID: u64 = 1 << 25;

const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_COMM: u32 = 3;
const PERF_RECORD_EXIT: u32 = 4;
const PERF_RECORD_FORK: u32 = 7;
const PERF_RECORD_MMAP2: u32 = 10;
const PERF_RECORD_MISC_COMM_EXEC: u16 = 1 << 13;
const PERF_RECORD_MISC_MMAP_BUILD_ID: u16 = 1 << 14;

const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// `struct perf_event_attr` up to `config3` (PERF_ATTR_SIZE_VER8); older kernels accept the
/// size as long as the fields they do not know are zero.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_watermark: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
    aux_sample_size: u32,
    reserved_3: u32,
    sig_data: u64,
    config3: u64,
}

/// What a mapped file is, as the kernel saw it when it was mapped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
}

/// One side-band record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// An executable mapping.
    Mmap {
        pid: u32,
        time_ns: u64,
        start: u64,
        len: u64,
        offset: u64,
        /// None when the kernel sent a build id instead of the inode.
        identity: Option<FileIdentity>,
        path: String,
    },
    /// The process replaced its image.
    Exec {
        pid: u32,
        time_ns: u64,
        comm: String,
    },
    /// A new process (`tid == pid`) or thread.
    Fork {
        pid: u32,
        ppid: u32,
        tid: u32,
        time_ns: u64,
    },
    Exit {
        pid: u32,
        tid: u32,
        time_ns: u64,
    },
    /// The kernel dropped this many records with the buffer full.
    Lost(u64),
}

impl Record {
    /// When it happened (CLOCK_BOOTTIME); 0 for a loss report.
    pub fn time_ns(&self) -> u64 {
        match self {
            Self::Mmap { time_ns, .. }
            | Self::Exec { time_ns, .. }
            | Self::Fork { time_ns, .. }
            | Self::Exit { time_ns, .. } => *time_ns,
            Self::Lost(_) => 0,
        }
    }

    /// The process whose image it changes: none for a fork (it makes a process), a thread's
    /// exit or a loss report.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Mmap { pid, .. } | Self::Exec { pid, .. } => Some(*pid),
            Self::Exit { pid, tid, .. } if pid == tid => Some(*pid),
            Self::Exit { .. } | Self::Fork { .. } | Self::Lost(_) => None,
        }
    }
}

/// Data pages per CPU buffer: 1 MiB holds about 8000 mapping records, a whole `make -j`
/// burst between two wakeups.
const DATA_PAGES: usize = 256;

/// Unread bytes of one CPU's buffer at which the kernel wakes the reader: a quarter of a
/// 4 KiB-page buffer (larger pages only make the buffer larger).
const WAKEUP_WATERMARK: u32 = (DATA_PAGES * 4096 / 4) as u32;

/// When the recording loop looks at the side-band buffers without being woken. Records come
/// in bursts (a fork, an exec, the loader's mappings a few hundred µs later, the exit): while
/// the recording's own processes send them (the rest of the machine's records do not count,
/// so a busy host with an idle target keeps the timer off), the buffers are read every
/// [`Pace::FAST`], so a file is opened through
/// /proc/PID/map_files while its process most likely still lives; after a read that found
/// nothing the period doubles, and past [`Pace::SLOWEST`] only the loop's other reads remain
/// (its 100 ms tick, the ring buffer's wakeups, which the kernel forces at every exec and exit
/// of a target, and the watermark). An idle recording then adds no wakeups to the tick's, and
/// a busy one at most one every `FAST` however many records arrive.
#[derive(Debug, Default)]
pub struct Pace {
    /// The current period; None when quiet.
    period: Option<std::time::Duration>,
    next: Option<std::time::Instant>,
}

impl Pace {
    /// The period while records arrive: the loader maps the C library 0.2-1 ms after the
    /// exec, and the 5-ms children of a build or a test harness must still be alive to be read
    /// through /proc; tokio's timer counts whole milliseconds anyway.
    pub const FAST: std::time::Duration = std::time::Duration::from_millis(2);
    /// The longest period: beyond it the loop's 100 ms tick reads as often.
    pub const SLOWEST: std::time::Duration = std::time::Duration::from_millis(64);

    /// A read at `now` found `records` records of the recording's processes.
    pub fn read(&mut self, now: std::time::Instant, records: u64) {
        self.period = if records > 0 {
            Some(Self::FAST)
        } else {
            self.period
                .map(|p| p.saturating_mul(2))
                .filter(|p| *p <= Self::SLOWEST)
        };
        self.next = self.period.map(|p| now + p);
    }

    /// When to read next; None while quiet.
    pub fn next(&self) -> Option<std::time::Instant> {
        self.next
    }
}

struct CpuBuffer {
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
    data_size: usize,
}

// SAFETY: the mapping is owned by this struct and only read through &mut self.
unsafe impl Send for CpuBuffer {}

impl Drop for CpuBuffer {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

impl CpuBuffer {
    fn head(&self) -> &AtomicU64 {
        // SAFETY: data_head lives at byte 1024 of the metadata page, 8-aligned.
        unsafe { &*(self.base.add(1024) as *const AtomicU64) }
    }
    fn tail(&self) -> &AtomicU64 {
        // SAFETY: data_tail lives at byte 1032 of the metadata page, 8-aligned.
        unsafe { &*(self.base.add(1032) as *const AtomicU64) }
    }

    /// Reads every complete record; `out` gets the raw bytes of each.
    fn read(&mut self, out: &mut Vec<Vec<u8>>) {
        let head = self.head().load(Ordering::Acquire);
        let mut tail = self.tail().load(Ordering::Relaxed);
        let page = page_size();
        // SAFETY: the data area follows the metadata page and is data_size bytes long.
        let data = unsafe { std::slice::from_raw_parts(self.base.add(page), self.data_size) };
        let size = self.data_size as u64;
        // The positions are free-running counters the kernel advances (and may, in principle,
        // wrap): wrapping arithmetic, and every index reduced modulo the area's size.
        while tail < head {
            let at = |off: u64| data[(tail.wrapping_add(off) % size) as usize];
            let rec_size = u64::from(u16::from_le_bytes([at(6), at(7)]));
            if rec_size < 8 || head - tail < rec_size {
                // Corrupt or torn: skip what is there rather than loop forever.
                tail = head;
                break;
            }
            out.push((0..rec_size).map(at).collect());
            tail = tail.wrapping_add(rec_size);
        }
        self.tail().store(tail, Ordering::Release);
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096)
}

/// The side-band events of every CPU, behind one epoll descriptor that becomes readable when
/// any of them has records.
pub struct Sideband {
    buffers: Vec<CpuBuffer>,
    epoll: OwnedFd,
    /// Records read but not yet handed out.
    raw: Vec<Vec<u8>>,
}

impl AsRawFd for Sideband {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.epoll.as_raw_fd()
    }
}

impl Sideband {
    /// Opens and enables the events on `cpus`. Needs what sampling needs (CAP_PERFMON).
    pub fn open(cpus: &[u32]) -> Result<Self> {
        // SAFETY: plain syscall.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(Error::io("epoll_create1", std::io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        let page = page_size();
        let len = page * (1 + DATA_PAGES);
        let mut buffers = Vec::with_capacity(cpus.len());
        for &cpu in cpus {
            let attr = PerfEventAttr {
                kind: PERF_TYPE_SOFTWARE,
                size: size_of::<PerfEventAttr>() as u32,
                config: PERF_COUNT_SW_DUMMY,
                sample_type: PERF_SAMPLE_TID | PERF_SAMPLE_TIME,
                flags: ATTR_DISABLED
                    | ATTR_MMAP
                    | ATTR_MMAP2
                    | ATTR_COMM
                    | ATTR_COMM_EXEC
                    | ATTR_TASK
                    | ATTR_SAMPLE_ID_ALL
                    | ATTR_USE_CLOCKID
                    | ATTR_WATERMARK,
                // Not at every record: each wakeup is an irq_work self-IPI on the CPU of the
                // process that caused the record, a VM exit charged to that process (issue
                // 17: 0.2-0.3 ms of every short child's start). The recording loop reads on a
                // short timer while records arrive ([`Pace`]); this only bounds a burst it
                // has not looked at yet, with three quarters of the buffer still free.
                wakeup_watermark: WAKEUP_WATERMARK,
                clockid: libc::CLOCK_BOOTTIME,
                ..Default::default()
            };
            // SAFETY: attr is a valid perf_event_attr of the size it states.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_perf_event_open,
                    &attr as *const PerfEventAttr,
                    -1 as libc::pid_t,
                    cpu as libc::c_int,
                    -1 as libc::c_int,
                    PERF_FLAG_FD_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(Error::io(
                    format!("perf_event_open (side-band records of CPU {cpu})"),
                    std::io::Error::last_os_error(),
                ));
            }
            // SAFETY: a fresh descriptor owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            // SAFETY: mapping a perf event's ring buffer; the result is checked.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(Error::io(
                    format!("mapping the side-band buffer of CPU {cpu}"),
                    std::io::Error::last_os_error(),
                ));
            }
            let buffer = CpuBuffer {
                fd,
                base: base.cast(),
                len,
                data_size: page * DATA_PAGES,
            };
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: u64::from(cpu),
            };
            // SAFETY: both descriptors are open; ev is a valid epoll_event.
            let added = unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    buffer.fd.as_raw_fd(),
                    &mut ev,
                )
            };
            if added < 0 {
                return Err(Error::io("epoll_ctl", std::io::Error::last_os_error()));
            }
            buffers.push(buffer);
        }
        for b in &buffers {
            // SAFETY: enabling an event we own.
            unsafe { libc::ioctl(b.fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0) };
        }
        Ok(Self {
            buffers,
            epoll,
            raw: Vec::new(),
        })
    }

    /// Whether any CPU's buffer holds records not read yet (no system call).
    pub fn pending(&self) -> bool {
        self.buffers
            .iter()
            .any(|b| b.head().load(Ordering::Acquire) != b.tail().load(Ordering::Relaxed))
    }

    /// Every record available now, in time order (records of different CPUs interleave).
    pub fn read(&mut self) -> Vec<Record> {
        self.raw.clear();
        for b in &mut self.buffers {
            b.read(&mut self.raw);
        }
        // Clears the epoll readiness: level-triggered readiness would otherwise stay.
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: valid buffer of 8 events; zero timeout never blocks.
        unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 8, 0) };
        let mut out: Vec<(u64, Record)> = self.raw.iter().filter_map(|r| parse_record(r)).collect();
        out.sort_by_key(|(t, _)| *t);
        out.into_iter().map(|(_, r)| r).collect()
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// A NUL-terminated string starting at `at`, within the record.
fn c_string(b: &[u8], at: usize) -> Option<(String, usize)> {
    let rest = b.get(at..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    let s = String::from_utf8_lossy(&rest[..end]).into_owned();
    // Strings are padded to 8 bytes, NUL included.
    Some((s, at.checked_add((end + 1).div_ceil(8) * 8)?))
}

/// `makedev` as glibc encodes it, so identities compare with `stat`'s `st_dev`.
pub fn makedev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    ((major & 0xfffff000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffffff00) << 12)
        | (minor & 0xff)
}

/// Decodes one record: (its time, what it says). None for kinds not asked for, or bytes that
/// do not hold a whole record.
pub fn parse_record(b: &[u8]) -> Option<(u64, Record)> {
    let kind = u32_at(b, 0)?;
    let misc = u16::from_le_bytes(b.get(4..6)?.try_into().ok()?);
    let size = usize::from(u16::from_le_bytes(b.get(6..8)?.try_into().ok()?));
    let b = b.get(..size)?;
    // sample_id_all with TID|TIME: pid, tid, time close every non-sample record.
    let trailer_time = |b: &[u8]| u64_at(b, b.len().checked_sub(8)?);
    match kind {
        PERF_RECORD_MMAP2 => {
            let pid = u32_at(b, 8)?;
            let start = u64_at(b, 16)?;
            let len = u64_at(b, 24)?;
            let offset = u64_at(b, 32)?;
            let identity = (misc & PERF_RECORD_MISC_MMAP_BUILD_ID == 0).then(|| {
                let (maj, min) = (u32_at(b, 40).unwrap_or(0), u32_at(b, 44).unwrap_or(0));
                FileIdentity {
                    dev: makedev(maj, min),
                    ino: u64_at(b, 48).unwrap_or(0),
                }
            });
            // prot, flags at 64 and 68; the file name at 72.
            let (path, end) = c_string(b, 72)?;
            if end.checked_add(16)? > b.len() {
                return None;
            }
            let time_ns = trailer_time(b)?;
            Some((
                time_ns,
                Record::Mmap {
                    pid,
                    time_ns,
                    start,
                    len,
                    offset,
                    identity,
                    path,
                },
            ))
        }
        PERF_RECORD_COMM if misc & PERF_RECORD_MISC_COMM_EXEC != 0 => {
            let pid = u32_at(b, 8)?;
            let (comm, _) = c_string(b, 16)?;
            let time_ns = trailer_time(b)?;
            Some((time_ns, Record::Exec { pid, time_ns, comm }))
        }
        PERF_RECORD_FORK | PERF_RECORD_EXIT => {
            let pid = u32_at(b, 8)?;
            let ppid = u32_at(b, 12)?;
            let tid = u32_at(b, 16)?;
            let time_ns = u64_at(b, 24)?;
            Some((
                time_ns,
                if kind == PERF_RECORD_FORK {
                    Record::Fork {
                        pid,
                        ppid,
                        tid,
                        time_ns,
                    }
                } else {
                    Record::Exit { pid, tid, time_ns }
                },
            ))
        }
        PERF_RECORD_LOST => Some((trailer_time(b)?, Record::Lost(u64_at(b, 16)?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u32, misc: u16, body: &[u8]) -> Vec<u8> {
        let size = (8 + body.len()) as u16;
        let mut v = kind.to_le_bytes().to_vec();
        v.extend(misc.to_le_bytes());
        v.extend(size.to_le_bytes());
        v.extend(body);
        v
    }

    fn trailer(pid: u32, time: u64) -> Vec<u8> {
        let mut v = pid.to_le_bytes().to_vec();
        v.extend(pid.to_le_bytes());
        v.extend(time.to_le_bytes());
        v
    }

    #[test]
    fn parses_mmap2() {
        let mut body = Vec::new();
        for v in [42u32, 42] {
            body.extend(v.to_le_bytes());
        }
        for v in [0x5000u64, 0x2000, 0x1000] {
            body.extend(v.to_le_bytes());
        }
        body.extend(8u32.to_le_bytes());
        body.extend(1u32.to_le_bytes());
        body.extend(77u64.to_le_bytes());
        body.extend(0u64.to_le_bytes());
        body.extend(5u32.to_le_bytes());
        body.extend(2u32.to_le_bytes());
        body.extend(b"/usr/bin/x\0\0\0\0\0\0");
        body.extend(trailer(42, 999));
        let (t, r) = parse_record(&header(PERF_RECORD_MMAP2, 2, &body)).expect("parses");
        assert_eq!(t, 999);
        assert_eq!(
            r,
            Record::Mmap {
                pid: 42,
                time_ns: 999,
                start: 0x5000,
                len: 0x2000,
                offset: 0x1000,
                identity: Some(FileIdentity {
                    dev: makedev(8, 1),
                    ino: 77
                }),
                path: "/usr/bin/x".into(),
            }
        );
        // Every truncation is refused, never a panic.
        let full = header(PERF_RECORD_MMAP2, 2, &body);
        for cut in 0..full.len() {
            let mut short = full[..cut].to_vec();
            if short.len() >= 8 {
                short[6..8].copy_from_slice(&(cut as u16).to_le_bytes());
            }
            assert!(parse_record(&short).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn parses_exec_fork_exit() {
        let mut body = 7u32.to_le_bytes().to_vec();
        body.extend(7u32.to_le_bytes());
        body.extend(b"make\0\0\0\0");
        body.extend(trailer(7, 5));
        let (_, r) = parse_record(&header(PERF_RECORD_COMM, PERF_RECORD_MISC_COMM_EXEC, &body))
            .expect("exec");
        assert_eq!(
            r,
            Record::Exec {
                pid: 7,
                time_ns: 5,
                comm: "make".into()
            }
        );
        // A plain rename is not an exec.
        assert!(parse_record(&header(PERF_RECORD_COMM, 0, &body)).is_none());
        let mut body = Vec::new();
        for v in [9u32, 7, 9, 7] {
            body.extend(v.to_le_bytes());
        }
        body.extend(11u64.to_le_bytes());
        body.extend(trailer(9, 11));
        let (_, r) = parse_record(&header(PERF_RECORD_FORK, 0, &body)).expect("fork");
        assert_eq!(
            r,
            Record::Fork {
                pid: 9,
                ppid: 7,
                tid: 9,
                time_ns: 11
            }
        );
        let (_, r) = parse_record(&header(PERF_RECORD_EXIT, 0, &body)).expect("exit");
        assert_eq!(
            r,
            Record::Exit {
                pid: 9,
                tid: 9,
                time_ns: 11
            }
        );
    }

    #[test]
    fn pace_reads_fast_during_a_burst_and_stops_when_quiet() {
        let t0 = std::time::Instant::now();
        let mut p = Pace::default();
        assert_eq!(p.next(), None, "nothing to read before any record");
        p.read(t0, 0);
        assert_eq!(p.next(), None, "an empty read while quiet stays quiet");
        p.read(t0, 3);
        assert_eq!(p.next(), Some(t0 + Pace::FAST));
        // Empty reads double the period up to SLOWEST, then the timer stops.
        let mut period = Pace::FAST;
        let mut empty = 0;
        loop {
            p.read(t0, 0);
            empty += 1;
            period *= 2;
            if period > Pace::SLOWEST {
                assert_eq!(p.next(), None);
                break;
            }
            assert_eq!(p.next(), Some(t0 + period));
        }
        assert_eq!(
            empty, 6,
            "2 ms doubling to 64 ms: six empty reads before it stops"
        );
        // A record during the back-off, or after it, reads fast again.
        p.read(t0, 1);
        assert_eq!(p.next(), Some(t0 + Pace::FAST));
    }

    #[test]
    fn makedev_matches_stat() {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata("/proc/self/exe").expect("stat");
        let dev = m.dev();
        // glibc's major/minor split, inverted by makedev.
        let major = (((dev >> 32) & 0xfffff000) | ((dev >> 8) & 0xfff)) as u32;
        let minor = (((dev >> 12) & 0xffffff00) | (dev & 0xff)) as u32;
        assert_eq!(makedev(major, minor), dev);
    }

    #[test]
    fn sees_its_own_exec() {
        let cpus = aya::util::online_cpus().expect("cpus");
        let Ok(mut sb) = Sideband::open(&cpus) else {
            // Without CAP_PERFMON (unit tests as a user) there is nothing to check.
            return;
        };
        let child = std::process::Command::new("/bin/true")
            .status()
            .expect("runs /bin/true");
        assert!(child.success());
        let records = sb.read();
        assert!(
            records
                .iter()
                .any(|r| matches!(r, Record::Mmap { path, .. } if path.ends_with("/true"))),
            "{records:?}"
        );
        assert!(records.iter().any(|r| matches!(r, Record::Exec { .. })));
    }
}
