//! Span probes: finds the probe ABI in the target's modules, attaches uprobes to it and to
//! `--span-fn` functions, and reads each callsite's static metadata from the target's memory
//! once.
use std::{
    collections::HashMap,
    fs::File,
    num::NonZeroU32,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use aya::programs::{
    UProbe,
    uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
};
use blazesym::inspect::{Inspector, source::Elf as InspectElf, source::Source as InspectSource};
use profiler_common::{abi, names};

use crate::error::{Error, Result};

/// `--spans`: attach to the probe ABI when the target has it, or never.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SpansMode {
    #[default]
    Auto,
    Off,
}

/// A `--span-fn` request: `SYMBOL` in the main executable or `BINARY:SYMBOL` in a library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanFn {
    pub binary: Option<String>,
    pub symbol: String,
}

impl std::str::FromStr for SpanFn {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        // C++ and Rust symbols contain "::"; only a single ':' separates binary and symbol.
        let split = s
            .char_indices()
            .find(|&(i, c)| {
                c == ':' && !s[i + 1..].starts_with(':') && (i == 0 || !s[..i].ends_with(':'))
            })
            .map(|(i, _)| i);
        let (binary, symbol) = match split {
            Some(i) => (Some(s[..i].to_string()), s[i + 1..].to_string()),
            None => (None, s.to_string()),
        };
        if symbol.is_empty() || binary.as_deref() == Some("") {
            return Err(format!("`{s}`: expected SYMBOL or BINARY:SYMBOL"));
        }
        Ok(Self { binary, symbol })
    }
}

impl std::fmt::Display for SpanFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.binary {
            Some(b) => write!(f, "{b}:{}", self.symbol),
            None => f.write_str(&self.symbol),
        }
    }
}

/// What was attached, for the summary.
#[derive(Clone, Debug, Default)]
pub struct Attached {
    /// Modules whose probe ABI is traced.
    pub abi_modules: Vec<String>,
    /// `--span-fn` probes, in the order given (their index is the events' `meta`).
    pub span_fns: Vec<String>,
}

/// File offsets of `names` in the ELF file at `path` (None for a name it lacks); Err says
/// why the file's symbols could not be read.
pub(crate) fn symbol_offsets(
    path: &Path,
    names: &[&str],
) -> std::result::Result<Vec<Option<u64>>, String> {
    let src = InspectSource::Elf(InspectElf::new(path));
    let inspector = Inspector::new();
    // The file is the target's choice: a panic of the reader on a malformed one is its error.
    let found = crate::contain::contained(|| inspector.lookup(&src, names))
        .map_err(|panic| format!("its symbols are malformed ({panic})"))?
        .map_err(|e| e.to_string())?;
    Ok(found
        .into_iter()
        .map(|syms| syms.into_iter().find_map(|s| s.file_offset))
        .collect())
}

/// Linux (major, minor) from the running kernel's release string.
fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Where to probe an ABI function found at `offset` in `file`: past its 1-byte nop, on the
/// 5-byte nop, when the code is profiler-probes' layout and the kernel emulates or optimizes
/// that nop (6.16+; measured here: ~490 ns per hit there vs ~800 ns on the 1-byte nop).
/// Anything else (another implementation of the ABI, an older kernel) is probed at the
/// symbol, where every layout is correct.
fn probe_offset(file: &Path, offset: u64, kernel: Option<(u32, u32)>) -> u64 {
    let mut code = [0u8; abi::X86_64_CODE.len()];
    let layout_ok = File::open(file)
        .and_then(|f| f.read_exact_at(&mut code, offset))
        .is_ok()
        && code == abi::X86_64_CODE;
    let kernel_ok = kernel.is_some_and(|v| v >= (6, 16));
    if cfg!(target_arch = "x86_64") && layout_ok && kernel_ok {
        offset + abi::NOP5_PROBE_OFFSET
    } else {
        offset
    }
}

fn program<'a>(ebpf: &'a mut aya::Ebpf, name: &'static str) -> Result<&'a mut UProbe> {
    let prog_err = |e| Error::Program {
        program: name,
        source: Box::new(e),
    };
    let p: &mut UProbe = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::Internal(format!("eBPF object lacks {name}")))?
        .try_into()
        .map_err(prog_err)?;
    if p.fd().is_err() {
        p.load().map_err(prog_err)?;
    }
    Ok(p)
}

fn attach_at(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
    target: &Path,
    offset: u64,
    pid: u32,
    cookie: Option<u64>,
) -> Result<()> {
    let scope = NonZeroU32::new(pid).map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
    let p = program(ebpf, name)?;
    p.attach(
        UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(offset),
            cookie,
        },
        target,
        scope,
    )
    .map_err(|e| Error::Program {
        program: name,
        source: Box::new(e),
    })?;
    Ok(())
}

/// The span programs, ends before begins: all are loaded (verified) before the first is
/// attached, and the ends attached first. Loaded on first use, the return program's
/// verification (0.68 s, strace) came between the entry and return probes of `--span-fn`,
/// and a function called every 10 ms began 17 spans that never ended.
const ABI_PROGRAMS: [&str; 4] = [
    names::PROGRAM_SPAN_END,
    names::PROGRAM_SPAN_EXIT,
    names::PROGRAM_SPAN_BEGIN,
    names::PROGRAM_SPAN_ENTER,
];
const FN_PROGRAMS: [&str; 2] = [names::PROGRAM_SPAN_FN_RETURN, names::PROGRAM_SPAN_FN_ENTRY];

fn load(ebpf: &mut aya::Ebpf, programs: &[&'static str]) -> Result<()> {
    for name in programs {
        program(ebpf, name)?;
    }
    Ok(())
}

/// A file the target maps, where probes may be placed: its path in the target, and a path
/// that reads it from here.
#[derive(Clone, Debug)]
pub struct ProbeModule {
    pub path: String,
    pub fd_path: PathBuf,
    /// The module store's mapping of the file: looked at for the ABI without opening it again.
    pub map: std::sync::Arc<memmap2::Mmap>,
}

/// Attaches the span probes; the programs stay attached as long as `ebpf` lives.
pub fn attach(
    ebpf: &mut aya::Ebpf,
    modules: &[ProbeModule],
    pid: u32,
    exe: &str,
    mode: SpansMode,
    span_fns: &[SpanFn],
) -> Result<Attached> {
    let mut attached = Attached::default();
    if mode == SpansMode::Auto {
        let mut modules: Vec<_> = modules.iter().collect();
        modules.sort_by(|a, b| a.path.cmp(&b.path));
        modules.dedup_by(|a, b| a.path == b.path);
        for m in modules {
            if !strings_mention(&m.map, abi::SYM_BEGIN) {
                continue;
            }
            let path = m.fd_path.clone();
            // Files that are not ELF (or unreadable) cannot carry the ABI.
            let Ok(offsets) = symbol_offsets(&path, &abi::SYMBOLS) else {
                continue;
            };
            let [Some(begin), Some(end), Some(enter), Some(exit)] = offsets[..] else {
                continue;
            };
            let kernel = kernel_version();
            load(ebpf, &ABI_PROGRAMS)?;
            for (prog, off) in ABI_PROGRAMS.into_iter().zip([end, exit, begin, enter]) {
                let at = probe_offset(&path, off, kernel);
                attach_at(ebpf, prog, &path, at, pid, None)?;
            }
            attached.abi_modules.push(m.path.clone());
        }
    }
    for (index, f) in span_fns.iter().enumerate() {
        let module = match &f.binary {
            None => modules.iter().find(|m| m.path == exe),
            Some(b) => modules
                .iter()
                .find(|m| m.path == *b || m.path.rsplit('/').next() == Some(b.as_str())),
        }
        .ok_or_else(|| Error::InvalidArgument {
            what: "--span-fn",
            reason: format!(
                "{f}: the target maps no {}",
                f.binary.as_deref().unwrap_or("main executable")
            ),
        })?;
        let path: PathBuf = module.fd_path.clone();
        let offset = symbol_offsets(&path, &[f.symbol.as_str()])
            .map_err(|reason| Error::InvalidArgument {
                what: "--span-fn",
                reason: format!("{f}: reading the symbols of {}: {reason}", module.path),
            })?
            .first()
            .copied()
            .flatten()
            .ok_or_else(|| Error::InvalidArgument {
                what: "--span-fn",
                reason: format!(
                    "{f}: no symbol `{}` in {} (stripped, or a mangled name is needed: see `nm -D`/`nm`)",
                    f.symbol, module.path
                ),
            })?;
        let cookie = Some(index as u64);
        load(ebpf, &FN_PROGRAMS)?;
        for prog in FN_PROGRAMS {
            attach_at(ebpf, prog, &path, offset, pid, cookie)?;
        }
        attached.span_fns.push(f.to_string());
    }
    Ok(attached)
}

/// Span probes for a scope whose processes change during the recording: every distinct file
/// a process in scope maps is looked at once, as the module store learns of it, and probed
/// for every process (`UProbeScope::AllProcesses`; uprobes live on the file's inode), the
/// kernel keeping only targets' hits. A file is probed once however many processes map it.
#[derive(Debug)]
pub struct LiveProbes {
    mode: SpansMode,
    span_fns: Vec<SpanFn>,
    kernel: Option<(u32, u32)>,
    /// Modules of the store below this id have been looked at.
    checked: usize,
    pub attached: Attached,
    /// Whether each `--span-fn` went into at least one file.
    fn_attached: Vec<bool>,
    /// Files probed after the recording began are told on stderr (scripts wait for them).
    pub tell: bool,
    /// Where each program went, by file: a file rewritten in place comes back as a new
    /// module of the same inode, whose probes at unchanged offsets are there already (a
    /// second would run the program twice per call).
    /// Keyed by (file, program, offset, `--span-fn` index or `u64::MAX`).
    probed: std::collections::HashSet<(super::sideband::FileIdentity, &'static str, u64, u64)>,
}

impl LiveProbes {
    /// `already`: modules of the store that were probed for one process before (not looked at
    /// again).
    pub fn new(mode: SpansMode, span_fns: &[SpanFn], already: usize, attached: Attached) -> Self {
        Self {
            mode,
            span_fns: span_fns.to_vec(),
            kernel: kernel_version(),
            checked: already,
            fn_attached: vec![!attached.span_fns.is_empty(); span_fns.len()],
            tell: false,
            probed: Default::default(),
            attached: Attached {
                // The events name `--span-fn` probes by index: all of them, in order.
                span_fns: span_fns.iter().map(ToString::to_string).collect(),
                ..attached
            },
        }
    }

    pub fn wanted(mode: SpansMode, span_fns: &[SpanFn]) -> bool {
        mode == SpansMode::Auto || !span_fns.is_empty()
    }

    /// Probes the modules the store learnt of since the last call. A failure names the file
    /// and the rest are looked at on the next call.
    pub fn attach_new(
        &mut self,
        ebpf: &mut aya::Ebpf,
        modules: &super::modules::ModuleStore,
    ) -> Result<()> {
        while self.checked < modules.len() {
            let id = self.checked as super::modules::ModuleId;
            self.checked += 1;
            let Some(m) = modules.get(id) else {
                continue;
            };
            let abi = self.mode == SpansMode::Auto && strings_mention(m.bytes(), abi::SYM_BEGIN);
            let fns: Vec<usize> = self
                .span_fns
                .iter()
                .enumerate()
                .filter(|(_, f)| match &f.binary {
                    None => is_program(&m.path, m.bytes()),
                    Some(b) => m.path == *b || m.path.rsplit('/').next() == Some(b.as_str()),
                })
                .filter(|(_, f)| strings_mention(m.bytes(), &f.symbol))
                .map(|(i, _)| i)
                .collect();
            // The scan touched the string tables of every file; only probed ones are read
            // again before symbolization.
            m.release_pages();
            if !abi && fns.is_empty() {
                continue;
            }
            // Keeps the descriptor behind the path open until the probes hold the inode.
            let Some(readable) = modules.readable_path(id) else {
                continue;
            };
            let path = readable.path();
            if abi
                && let Ok(offsets) = symbol_offsets(path, &abi::SYMBOLS)
                && let [Some(begin), Some(end), Some(enter), Some(exit)] = offsets[..]
            {
                load(ebpf, &ABI_PROGRAMS).map_err(|e| in_file(e, &m.path))?;
                for (prog, off) in ABI_PROGRAMS.into_iter().zip([end, exit, begin, enter]) {
                    let at = probe_offset(path, off, self.kernel);
                    if self.probed.insert((m.identity, prog, at, u64::MAX)) {
                        attach_at(ebpf, prog, path, at, 0, None)
                            .map_err(|e| in_file(e, &m.path))?;
                    }
                }
                self.attached.abi_modules.push(m.path.clone());
                if self.tell {
                    eprintln!("profiler: span probes in {}", m.path);
                }
            }
            for index in fns {
                let Some(f) = self.span_fns.get(index) else {
                    continue;
                };
                let Some(offset) = symbol_offsets(path, &[f.symbol.as_str()])
                    .ok()
                    .and_then(|found| found.first().copied().flatten())
                else {
                    continue;
                };
                let cookie = Some(index as u64);
                load(ebpf, &FN_PROGRAMS).map_err(|e| in_file(e, &m.path))?;
                for prog in FN_PROGRAMS {
                    if self.probed.insert((m.identity, prog, offset, index as u64)) {
                        attach_at(ebpf, prog, path, offset, 0, cookie)
                            .map_err(|e| in_file(e, &m.path))?;
                    }
                }
                if let Some(done) = self.fn_attached.get_mut(index) {
                    *done = true;
                }
                if self.tell {
                    eprintln!("profiler: --span-fn {f} in {}", m.path);
                }
            }
        }
        Ok(())
    }

    /// `--span-fn` requests no file in scope could take, for the warnings.
    pub fn unattached(&self) -> Vec<String> {
        self.span_fns
            .iter()
            .zip(&self.fn_attached)
            .filter(|(_, done)| !**done)
            .map(|(f, _)| f.to_string())
            .collect()
    }
}

fn in_file(e: Error, path: &str) -> Error {
    Error::Internal(format!("attaching span probes to {path}: {e}"))
}

/// Whether the ELF file's symbol string tables hold `name`: a cheap test that rules out
/// almost every file before its symbols are parsed, touching only those tables (a whole
/// machine's files are looked at under `--all`).
fn strings_mention(bytes: &[u8], name: &str) -> bool {
    use object::{Object, ObjectSection};
    let Ok(file) = object::File::parse(bytes) else {
        return false;
    };
    let mut needle = name.as_bytes().to_vec();
    needle.push(0);
    let finder = memchr::memmem::Finder::new(&needle);
    [".dynstr", ".strtab"].iter().any(|section| {
        file.section_by_name(section)
            .and_then(|s| s.data().ok())
            .is_some_and(|data| finder.find(data).is_some())
    })
}

/// Whether a file is a program's executable rather than a library: where `--span-fn SYMBOL`
/// without a binary goes in a scope of many programs.
fn is_program(path: &str, bytes: &[u8]) -> bool {
    use object::Object;
    let Ok(file) = object::File::parse(bytes) else {
        return false;
    };
    let name = path.rsplit('/').next().unwrap_or(path);
    match file.kind() {
        object::ObjectKind::Executable => true,
        // PIE executables are ET_DYN like libraries; libc has an interpreter too, but not
        // a library's name.
        object::ObjectKind::Dynamic => {
            file.section_by_name(".interp").is_some() && !name.contains(".so")
        }
        _ => false,
    }
}

/// A span callsite's metadata, as read from the target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpanMeta {
    pub name: String,
    pub target: String,
    pub file: String,
    pub line: u32,
}

/// Reads `SpanMeta` structures and their strings out of the targets' memory, once per
/// (process, address): two programs can have different callsites at one address.
#[derive(Debug, Default)]
pub struct MetaReader {
    /// /proc/PID/mem of the processes whose spans began, None where it cannot be opened.
    mems: HashMap<u32, Option<File>>,
    pub cache: HashMap<(u32, u64), SpanMeta>,
}

const MAX_STRING: usize = 512;

impl MetaReader {
    /// After an exec the old /proc/PID/mem still points at the image that was replaced; after
    /// an exit the descriptor is of no use and must not pile up over a long recording.
    pub fn forget(&mut self, pid: u32) {
        self.mems.remove(&pid);
    }

    /// Lets go of the metadata of processes a long recording has forgotten.
    pub fn prune(&mut self, pids: &std::collections::HashSet<u32>) {
        self.mems.retain(|pid, _| !pids.contains(pid));
        self.cache.retain(|(pid, _), _| !pids.contains(pid));
    }

    /// Reads the metadata at `addr` in `pid` if not read yet. Unreadable metadata (the target
    /// exited, or a bad pointer) is cached as a placeholder naming the address, not retried
    /// forever.
    pub fn read(&mut self, pid: u32, addr: u64) {
        if self.cache.contains_key(&(pid, addr)) {
            return;
        }
        let mem = self
            .mems
            .entry(pid)
            .or_insert_with(|| File::open(format!("/proc/{pid}/mem")).ok());
        let meta = mem
            .as_ref()
            .and_then(|mem| read_meta(mem, addr))
            .unwrap_or_else(|| SpanMeta {
                name: format!("[span meta {addr:#x} unreadable]"),
                ..Default::default()
            });
        self.cache.insert((pid, addr), meta);
    }
}

fn read_meta(mem: &File, addr: u64) -> Option<SpanMeta> {
    let mut raw = [0u8; size_of::<abi::SpanMetaRaw>()];
    mem.read_exact_at(&mut raw, addr).ok()?;
    // SAFETY: SpanMetaRaw is plain old data of exactly this size.
    let meta: abi::SpanMetaRaw = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    if meta.version < abi::META_VERSION {
        return None;
    }
    let string = |ptr: u64| -> String {
        if ptr == 0 {
            return String::new();
        }
        let mut buf = vec![0u8; MAX_STRING];
        // A string near the end of a mapping reads short: take what was read.
        let n = (0..4)
            .map(|shift| MAX_STRING >> (shift * 2))
            .find_map(|len| mem.read_exact_at(&mut buf[..len], ptr).ok().map(|()| len))
            .unwrap_or(0);
        let end = buf[..n].iter().position(|&b| b == 0).unwrap_or(n);
        String::from_utf8_lossy(&buf[..end]).into_owned()
    };
    Some(SpanMeta {
        name: string(meta.name),
        target: string(meta.target),
        file: string(meta.file),
        line: meta.line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_the_nop5_only_for_the_known_layout_on_new_kernels() {
        let dir = std::env::temp_dir().join(format!("probe-offset-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("code");
        let mut bytes = vec![0xcc; 16];
        bytes.extend_from_slice(&abi::X86_64_CODE);
        bytes.extend_from_slice(&[0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3, 0xc3]);
        std::fs::write(&file, &bytes).expect("write");
        assert_eq!(probe_offset(&file, 16, Some((6, 18))), 17);
        assert_eq!(probe_offset(&file, 16, Some((6, 16))), 17);
        assert_eq!(
            probe_offset(&file, 16, Some((6, 12))),
            16,
            "older kernel: the symbol"
        );
        assert_eq!(probe_offset(&file, 16, None), 16);
        assert_eq!(
            probe_offset(&file, 23, Some((6, 18))),
            23,
            "other code: the symbol"
        );
        assert_eq!(
            probe_offset(&file, 1000, Some((6, 18))),
            1000,
            "unreadable: the symbol"
        );
        let _ = std::fs::remove_dir_all(&dir);
        assert!(kernel_version().is_some_and(|v| v.0 >= 3));
    }

    /// A mapped library of this test process, by file name prefix.
    fn own_library(prefix: &str) -> Option<String> {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        maps.lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with(prefix)))
            .map(str::to_string)
    }

    #[test]
    fn string_tables_and_programs_are_told_apart() {
        let exe = std::fs::read("/proc/self/exe").expect("own exe");
        let path = std::fs::read_link("/proc/self/exe").expect("link");
        let path = path.to_string_lossy();
        assert!(is_program(&path, &exe), "a test binary is a program");
        // Its own functions are named in its symbol string table; a name no table holds is not.
        assert!(strings_mention(&exe, "main"));
        assert!(!strings_mention(&exe, "no_such_symbol_anywhere_42"));
        assert!(!strings_mention(b"not an ELF file", "main"));
        let libc = own_library("libc.so").expect("libc mapped");
        let bytes = std::fs::read(&libc).expect("libc");
        assert!(
            !is_program(&libc, &bytes),
            "libc has an interpreter but is a library"
        );
        assert!(strings_mention(&bytes, "malloc"));
    }

    #[test]
    fn span_fn_specs() {
        let f: SpanFn = "compute".parse().expect("plain");
        assert_eq!((f.binary, f.symbol.as_str()), (None, "compute"));
        let f: SpanFn = "libc.so.6:malloc".parse().expect("lib");
        assert_eq!(f.binary.as_deref(), Some("libc.so.6"));
        assert_eq!(f.symbol, "malloc");
        let f: SpanFn = "app::module::run".parse().expect("rust path");
        assert_eq!((f.binary, f.symbol.as_str()), (None, "app::module::run"));
        let f: SpanFn = "/usr/lib/libfoo.so:ns::f".parse().expect("lib + c++");
        assert_eq!(f.binary.as_deref(), Some("/usr/lib/libfoo.so"));
        assert_eq!(f.symbol, "ns::f");
        assert!("".parse::<SpanFn>().is_err());
        assert!("lib:".parse::<SpanFn>().is_err());
        assert!(":sym".parse::<SpanFn>().is_err());
    }

    #[repr(C)]
    struct Meta {
        version: u32,
        line: u32,
        name: *const u8,
        target: *const u8,
        file: *const u8,
    }

    #[test]
    fn reads_metadata_from_a_live_process() {
        static NAME: &[u8] = b"db_query\0";
        static TARGET: &[u8] = b"app::db\0";
        let meta = Meta {
            version: abi::META_VERSION,
            line: 42,
            name: NAME.as_ptr(),
            target: TARGET.as_ptr(),
            file: std::ptr::null(),
        };
        let mut r = MetaReader::default();
        let me = std::process::id();
        let addr = &meta as *const Meta as u64;
        r.read(me, addr);
        assert_eq!(
            r.cache.get(&(me, addr)),
            Some(&SpanMeta {
                name: "db_query".into(),
                target: "app::db".into(),
                file: String::new(),
                line: 42
            })
        );
        r.read(me, 8);
        assert!(r.cache[&(me, 8)].name.contains("unreadable"));
    }
}
