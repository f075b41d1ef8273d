//! Windows waiting for one destination, oldest first, bounded in bytes: in memory, or in a
//! directory (`--spool DIR`) where they outlive the agent and are sent at its next start.
//! When a new window does not fit, the oldest ones are dropped, counted and told.
use std::collections::VecDeque;

use crate::outputs::OutputDir;

/// One HTTP request of a window's delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Path and query, after the endpoint's base path.
    pub target: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Everything one window sends to one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The window's edges, Unix nanoseconds.
    pub from_ns: u64,
    pub until_ns: u64,
    pub requests: Vec<Request>,
}

const MAGIC: &[u8; 8] = b"PRSPOOL1";
/// Spool files are named by sequence number, which orders them across restarts.
const SUFFIX: &str = ".window";

impl Entry {
    pub fn size(&self) -> u64 {
        self.requests
            .iter()
            .map(|r| (r.target.len() + r.content_type.len() + r.body.len() + 16) as u64)
            .sum::<u64>()
            .saturating_add(32)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size() as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.from_ns.to_le_bytes());
        out.extend_from_slice(&self.until_ns.to_le_bytes());
        out.extend_from_slice(&(self.requests.len() as u32).to_le_bytes());
        for r in &self.requests {
            for field in [r.target.as_bytes(), r.content_type.as_bytes(), &r.body] {
                out.extend_from_slice(&(field.len() as u64).to_le_bytes());
                out.extend_from_slice(field);
            }
        }
        out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
        out
    }

    /// None for a file that is not a whole spool entry (cut short by a crash, or not ours).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32fast::hash(body).to_le_bytes() != crc {
            return None;
        }
        let mut r = Reader(body.strip_prefix(MAGIC)?);
        let from_ns = r.u64()?;
        let until_ns = r.u64()?;
        let n = r.u32()?;
        let mut requests = Vec::new();
        for _ in 0..n {
            let target = String::from_utf8(r.field()?.to_vec()).ok()?;
            let content_type = String::from_utf8(r.field()?.to_vec()).ok()?;
            let body = r.field()?.to_vec();
            requests.push(Request {
                target,
                content_type,
                body,
            });
        }
        r.0.is_empty().then_some(Self {
            from_ns,
            until_ns,
            requests,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = self.0.split_at_checked(n)?;
        self.0 = b;
        Some(a)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn field(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u64()?).ok()?;
        self.take(n)
    }
}

/// A window in the queue: in memory, or the name of its file.
#[derive(Debug)]
enum Held {
    Memory(Entry),
    File(String),
}

#[derive(Debug)]
struct Queued {
    held: Held,
    size: u64,
}

/// Where a dropped window went: said on stderr by the caller.
#[derive(Debug, PartialEq, Eq)]
pub struct Dropped {
    pub from_ns: u64,
    pub until_ns: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: Option<OutputDir>,
    max_bytes: u64,
    queue: VecDeque<Queued>,
    used: u64,
    next_seq: u64,
    /// Windows dropped to make room, since the start.
    pub dropped: u64,
}

impl Spool {
    /// Opens the queue; with a directory, the windows a previous run left there come first,
    /// in their order. Files that are not whole entries are left alone and named in the
    /// returned warnings.
    pub fn open(dir: Option<OutputDir>, max_bytes: u64) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        let mut spool = Self {
            dir: None,
            max_bytes,
            queue: VecDeque::new(),
            used: 0,
            next_seq: 0,
            dropped: 0,
        };
        if let Some(d) = &dir {
            let mut found: Vec<(u64, String)> = match d.list() {
                Ok(names) => names
                    .into_iter()
                    .filter_map(|n| {
                        let seq = u64::from_str_radix(n.strip_suffix(SUFFIX)?, 16).ok()?;
                        Some((seq, n))
                    })
                    .collect(),
                Err(e) => {
                    warnings.push(format!(
                        "listing the spool {} failed ({e}): windows left there by an earlier run are not sent",
                        d.path().display()
                    ));
                    Vec::new()
                }
            };
            found.sort();
            for (seq, name) in found {
                match d.read(&name).ok().as_deref().and_then(Entry::decode) {
                    Some(e) => {
                        let size = e.size();
                        spool.used = spool.used.saturating_add(size);
                        spool.queue.push_back(Queued {
                            held: Held::File(name),
                            size,
                        });
                    }
                    None => warnings.push(format!(
                        "{}: not a whole spooled window (left alone)",
                        d.path().join(&name).display()
                    )),
                }
                spool.next_seq = spool.next_seq.max(seq.saturating_add(1));
            }
        }
        spool.dir = dir;
        (spool, warnings)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues `entry` behind the others, dropping the oldest until it fits; a window larger
    /// than the whole spool is itself dropped. Returns what was dropped, and an error to say
    /// when the spool directory could not be written (the window then waits in memory).
    pub fn push(&mut self, entry: Entry) -> (Vec<Dropped>, Option<String>) {
        let size = entry.size();
        let mut dropped = Vec::new();
        if size > self.max_bytes {
            self.dropped = self.dropped.saturating_add(1);
            dropped.push(Dropped {
                from_ns: entry.from_ns,
                until_ns: entry.until_ns,
            });
            return (dropped, None);
        }
        while self.used.saturating_add(size) > self.max_bytes {
            let Some(old) = self.queue.pop_front() else {
                break;
            };
            self.used = self.used.saturating_sub(old.size);
            if let Some(e) = self.load(&old.held) {
                dropped.push(Dropped {
                    from_ns: e.from_ns,
                    until_ns: e.until_ns,
                });
            }
            self.forget(&old.held);
            self.dropped = self.dropped.saturating_add(1);
        }
        let mut error = None;
        let held = match &self.dir {
            Some(d) => {
                let name = format!("{:016x}{SUFFIX}", self.next_seq);
                self.next_seq = self.next_seq.saturating_add(1);
                match d.write_bytes(&name, &entry.encode()) {
                    Ok(_) => Held::File(name),
                    Err(e) => {
                        error = Some(e.to_string());
                        Held::Memory(entry)
                    }
                }
            }
            None => Held::Memory(entry),
        };
        self.used = self.used.saturating_add(size);
        self.queue.push_back(Queued { held, size });
        (dropped, error)
    }

    /// The oldest window, read back; a spool file that cannot be read any more is removed
    /// and counted as dropped (returned in the second value).
    pub fn front(&mut self) -> (Option<Entry>, Vec<Dropped>) {
        let mut lost = Vec::new();
        while let Some(q) = self.queue.front() {
            if let Some(e) = self.load(&q.held) {
                return (Some(e), lost);
            }
            if let Some(q) = self.queue.pop_front() {
                self.used = self.used.saturating_sub(q.size);
                self.forget(&q.held);
            }
            self.dropped = self.dropped.saturating_add(1);
            lost.push(Dropped {
                from_ns: 0,
                until_ns: 0,
            });
        }
        (None, lost)
    }

    /// Removes the oldest window: it was delivered.
    pub fn pop(&mut self) {
        if let Some(q) = self.queue.pop_front() {
            self.used = self.used.saturating_sub(q.size);
            self.forget(&q.held);
        }
    }

    /// Windows only in memory (the spool directory failed, or there is none): they die with
    /// the agent.
    pub fn in_memory(&self) -> usize {
        self.queue
            .iter()
            .filter(|q| matches!(q.held, Held::Memory(_)))
            .count()
    }

    fn load(&self, held: &Held) -> Option<Entry> {
        match held {
            Held::Memory(e) => Some(e.clone()),
            Held::File(name) => {
                let d = self.dir.as_ref()?;
                Entry::decode(&d.read(name).ok()?)
            }
        }
    }

    fn forget(&self, held: &Held) {
        if let (Held::File(name), Some(d)) = (held, &self.dir) {
            let _ = d.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64, body: usize) -> Entry {
        Entry {
            from_ns: i,
            until_ns: i + 1,
            requests: vec![Request {
                target: format!("/ingest?n={i}"),
                content_type: "application/octet-stream".into(),
                body: vec![i as u8; body],
            }],
        }
    }

    #[test]
    fn entries_survive_encoding_and_refuse_damage() {
        let e = entry(7, 100);
        let bytes = e.encode();
        assert_eq!(Entry::decode(&bytes), Some(e));
        for cut in [0, 1, 8, bytes.len() - 1] {
            assert_eq!(Entry::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert_eq!(Entry::decode(&flipped), None);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_first_and_counts_them() {
        let one = entry(0, 1000).size();
        let (mut s, _) = Spool::open(None, one * 3);
        for i in 0..5 {
            let (dropped, err) = s.push(entry(i, 1000));
            assert!(err.is_none());
            if i < 3 {
                assert!(dropped.is_empty());
            } else {
                assert_eq!(
                    dropped,
                    vec![Dropped {
                        from_ns: i - 3,
                        until_ns: i - 2
                    }]
                );
            }
        }
        assert_eq!((s.len(), s.dropped), (3, 2));
        let order: Vec<u64> = (0..3)
            .map(|_| {
                let e = s.front().0.unwrap();
                s.pop();
                e.from_ns
            })
            .collect();
        assert_eq!(order, vec![2, 3, 4]);
        // Larger than the whole spool: dropped itself, the queue untouched.
        let (dropped, _) = s.push(entry(9, 10_000));
        assert_eq!(dropped.len(), 1);
        assert_eq!(s.dropped, 3);
    }

    #[test]
    fn a_spool_directory_keeps_windows_in_order_across_restarts() {
        let path = std::env::temp_dir().join(format!("profiler-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        {
            let dir = OutputDir::prepare(&path).unwrap();
            let (mut s, w) = Spool::open(Some(dir), 1 << 20);
            assert!(w.is_empty());
            for i in 0..3 {
                s.push(entry(i, 10));
            }
            s.pop();
        }
        std::fs::write(path.join("junk.window"), b"x").unwrap();
        std::fs::write(path.join("00000000000000ff.window"), b"cut short").unwrap();
        let dir = OutputDir::prepare(&path).unwrap();
        let (mut s, w) = Spool::open(Some(dir), 1 << 20);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(s.len(), 2);
        s.push(entry(5, 10));
        let mut order = Vec::new();
        while let (Some(e), _) = s.front() {
            order.push(e.from_ns);
            s.pop();
        }
        assert_eq!(order, vec![1, 2, 5]);
        let _ = std::fs::remove_dir_all(&path);
    }
}
