//! DWARF call graphs: user stacks unwound in userspace from the registers and stack bytes the
//! kernel program copied, with each module's `.eh_frame` (or `.debug_frame`) CFI, parsed once
//! per file. framehop does the unwinding and falls back to frame pointers for code without CFI.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

use framehop::{
    ExplicitModuleSectionInfo, Module, Unwinder as _,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};
use object::{Object, ObjectSection, ObjectSegment};
use profiler_common::{DwarfRegs, MAX_STACK_DEPTH};

use super::{
    modules::ModuleStore,
    procfs::{AddressSpace, Mapping},
    stack_copy::Outcome,
};

/// Stack ids of unwound stacks: above every id of the kernel's stack map.
pub const UNWOUND_ID_BIT: u32 = 1 << 31;

/// Bytes a module's unwind tables are read from: its memory mapping (or, for the vDSO, a copy
/// of the process's memory), shared, never copied per section.
pub type Image = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// One section of an [`Image`].
#[derive(Clone)]
pub struct Data {
    image: Image,
    range: std::ops::Range<usize>,
}

impl std::ops::Deref for Data {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        (*self.image)
            .as_ref()
            .get(self.range.clone())
            .unwrap_or_default()
    }
}

impl Default for Data {
    fn default() -> Self {
        Self {
            image: Arc::new(Vec::new()),
            range: 0..0,
        }
    }
}

/// The unwind sections of one file, shared by every process that maps it.
pub struct Sections {
    text: Option<(std::ops::Range<u64>, Data)>,
    eh_frame: Option<(std::ops::Range<u64>, Data)>,
    eh_frame_hdr: Option<(std::ops::Range<u64>, Data)>,
    got: Option<std::ops::Range<u64>>,
    debug_frame: Option<Data>,
    /// PT_LOAD segments: (file offset, file size, virtual address).
    segments: Vec<(u64, u64, u64)>,
    /// The ELF entry point (virtual address).
    entry: u64,
}

impl std::fmt::Debug for Sections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sections")
            .field("segments", &self.segments)
            .finish_non_exhaustive()
    }
}

impl Sections {
    pub fn parse(image: Image) -> Option<Self> {
        let bytes = (*image).as_ref();
        let file = object::File::parse(bytes).ok()?;
        let section = |name: &str| {
            let s = file.section_by_name(name)?;
            // Sections without file contents (a debug file's .text) have nothing to unwind.
            let (offset, size) = s.file_range()?;
            let start = usize::try_from(offset).ok()?;
            let range = start..start.checked_add(usize::try_from(size).ok()?)?;
            bytes.get(range.clone())?;
            let data = Data {
                image: image.clone(),
                range,
            };
            Some((s.address()..s.address().checked_add(s.size())?, data))
        };
        Some(Self {
            text: section(".text"),
            eh_frame: section(".eh_frame"),
            eh_frame_hdr: section(".eh_frame_hdr"),
            got: section(".got").map(|(r, _)| r),
            debug_frame: section(".debug_frame").map(|(_, d)| d),
            segments: file
                .segments()
                .map(|s| {
                    let (offset, size) = s.file_range();
                    (offset, size, s.address())
                })
                .collect(),
            entry: file.entry(),
        })
    }

    /// Load bias of a mapping of this file: where its virtual address 0 is in the process.
    /// Mappings start on pages, segments need not (lld packs them): the segment a mapping
    /// belongs to is the last one whose page-aligned start it covers.
    fn bias(&self, m: &Mapping) -> Option<u64> {
        const PAGE_MASK: u64 = !0xfff;
        let &(offset, _, vaddr) = self
            .segments
            .iter()
            .filter(|&&(off, size, _)| {
                off & PAGE_MASK <= m.offset
                    && off
                        .checked_add(size.max(1))
                        .is_some_and(|end| m.offset < end)
            })
            .max_by_key(|&&(off, _, _)| off)?;
        // Segment fields come from the file: any value.
        m.start.checked_sub(
            (vaddr & PAGE_MASK).checked_add(m.offset.checked_sub(offset & PAGE_MASK)?)?,
        )
    }

    fn module_info(&self) -> ExplicitModuleSectionInfo<Data> {
        let split = |s: &Option<(std::ops::Range<u64>, Data)>| match s {
            Some((r, d)) => (Some(r.clone()), Some(d.clone())),
            None => (None, None),
        };
        let (text_svma, text) = split(&self.text);
        let (eh_frame_svma, eh_frame) = split(&self.eh_frame);
        let (eh_frame_hdr_svma, eh_frame_hdr) = split(&self.eh_frame_hdr);
        ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma,
            text,
            got_svma: self.got.clone(),
            eh_frame_svma,
            eh_frame,
            eh_frame_hdr_svma,
            eh_frame_hdr,
            debug_frame: self.debug_frame.clone(),
            ..Default::default()
        }
    }
}

/// One process image's unwinder: the modules of its address space as far as seen, as they
/// were at the time of the last sample unwound.
#[derive(Default)]
struct SpaceUnwinder {
    unwinder: UnwinderX86_64<Data>,
    cache: CacheX86_64,
    /// What the unwinder holds, by start address (framehop's key for a module): each
    /// mapping in effect, with or without unwind tables.
    added: HashMap<u64, MappingKey>,
    /// The space's mapping count and era ([`AddressSpace::era_at`]) `added` was made for.
    seen: (usize, u32),
}

/// What tells two mappings at one start apart: where they end, and the file (and offset) or
/// pseudo-file they map. Two with the same key have the same code.
type MappingKey = (u64, u64, Option<super::modules::ModuleId>, String);

fn key_of(m: &Mapping) -> MappingKey {
    (
        m.end,
        m.offset,
        m.module,
        if m.module.is_some() {
            String::new()
        } else {
            m.path.clone()
        },
    )
}

/// What unwinding cost and found, for the summary.
#[derive(Clone, Debug, Default)]
pub struct UnwindStats {
    pub samples: u64,
    /// Stacks that ended before a thread's entry point (copy too short, no unwind info).
    pub truncated: u64,
    /// Of those, the ones that needed bytes past the end of the copied stack while the copy
    /// had not reached the top of the stack: a larger `--stack-size` would have gone on.
    pub out_of_copy: u64,
    /// Time spent unwinding, and of it loading modules (reading and indexing their CFI).
    pub total_ns: u64,
    pub load_ns: u64,
    /// Bytes above `sp` each complete unwind read, to choose `--stack-size` from.
    pub stack_bytes_used: Vec<u32>,
    /// Stack bytes the kernel copied, all samples together.
    pub copied_bytes: u64,
    /// Stacks whose copy its thread's sizing cut short ([`super::stack_copy`]): most of
    /// them also in `out_of_copy`, the rest stopped at a stack top remembered wrongly.
    pub out_of_sized_copy: u64,
}

#[derive(Default)]
pub struct Unwinder {
    spaces: HashMap<u32, SpaceUnwinder>,
    /// Unwound stacks, interned: leaf first.
    pub stacks: HashMap<Vec<u64>, u32>,
    /// The next stack's id: ids are never reused, even after [`Unwinder::prune`].
    next_id: u32,
    pub stats: UnwindStats,
}

/// A stack unwound from one sample.
pub struct Unwound {
    /// Id of the stack's frames in [`Unwinder::stacks`], None for no frame at all.
    pub id: Option<u32>,
    pub truncated: bool,
    /// What it says of the copy's size.
    pub outcome: super::stack_copy::Outcome,
}

impl Unwinder {
    /// Lets go of what a long recording no longer needs: the unwinders of address spaces
    /// emptied by [`super::processes::Processes::prune_exited`], the stacks no sample still
    /// waiting refers to, and the per-sample figures of the windows already cut.
    pub fn prune(&mut self, spaces: &HashSet<u32>, keep: &HashSet<u32>) {
        self.spaces.retain(|index, _| !spaces.contains(index));
        self.stacks.retain(|_, id| keep.contains(id));
        self.stats.stack_bytes_used = Vec::new();
    }

    /// Brings the unwinder of `space` to its modules at `time_ns`: the ones it has not seen
    /// yet are added, and those another mapping went over by then (a library unloaded and
    /// another loaded at its addresses) are swapped. Tables are parsed once per file, in the
    /// module store, whatever the number of processes mapping them.
    fn sync(&mut self, index: u32, space: &AddressSpace, time_ns: u64, modules: &ModuleStore) {
        let seen = (space.mappings.len(), space.era_at(time_ns));
        let s = self.spaces.entry(index).or_default();
        if s.seen == seen {
            return;
        }
        s.seen = seen;
        let in_effect: HashMap<u64, &Mapping> =
            space.in_effect_at(time_ns).map(|m| (m.start, m)).collect();
        let stale: Vec<u64> = s
            .added
            .iter()
            .filter(|&(start, key)| in_effect.get(start).is_none_or(|m| key_of(m) != *key))
            .map(|(&start, _)| start)
            .collect();
        for start in stale {
            s.unwinder.remove_module(start);
            s.added.remove(&start);
        }
        for m in in_effect.into_values() {
            if s.added.contains_key(&m.start) {
                continue;
            }
            let sections = if m.path == "[vdso]" {
                // The kernel's vDSO (clock_gettime, …) is no file, but it is an ELF image with
                // CFI: read it from the process's memory.
                vdso_sections(space.pid, m).map(Arc::new)
            } else if let Some(id) = m.module {
                modules.get(id).and_then(|f| f.sections())
            } else {
                None
            };
            let module = sections.and_then(|sections| {
                let bias = sections.bias(m)?;
                Some(Module::new(
                    m.path.clone(),
                    m.start..m.end,
                    bias,
                    sections.module_info(),
                ))
            });
            s.added.insert(m.start, key_of(m));
            if let Some(module) = module {
                s.unwinder.add_module(module);
            }
        }
    }

    /// Unwinds one sample taken at `time_ns` in address space `index`; `stack` holds the bytes
    /// from `regs.sp` up, and `reached_top` says whether they end at the top of the stack
    /// ([`super::stack_copy::Copy::reached_top`]).
    pub fn unwind(
        &mut self,
        (index, time_ns): (u32, u64),
        space: &AddressSpace,
        modules: &ModuleStore,
        regs: &DwarfRegs,
        stack: &[u8],
        reached_top: bool,
    ) -> Unwound {
        let started = Instant::now();
        self.sync(index, space, time_ns, modules);
        self.stats.load_ns += started.elapsed().as_nanos() as u64;
        let mut frames = Vec::with_capacity(32);
        let mut used = 0usize;
        let mut past_copy = false;
        let sp = regs.sp;
        let mut read = |addr: u64| -> Result<u64, ()> {
            // `addr` is whatever the target's stack held: any value, checked before use.
            let at = usize::try_from(addr.checked_sub(sp).ok_or(())?).map_err(|_| ())?;
            let end = at.checked_add(8).ok_or(())?;
            let Some(bytes) = stack.get(at..end) else {
                past_copy = at >= stack.len();
                return Err(());
            };
            used = used.max(end);
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let mut truncated = true;
        if let Some(s) = self.spaces.get_mut(&index) {
            let mut it = s.unwinder.iter_frames(
                regs.ip,
                UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp),
                &mut s.cache,
                &mut read,
            );
            while frames.len() < MAX_STACK_DEPTH {
                match it.next() {
                    Ok(Some(frame)) => frames.push(frame.address()),
                    Ok(None) => {
                        truncated = false;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        if truncated
            && frames
                .last()
                .is_some_and(|&a| returns_into_entry(space, time_ns, modules, a))
        {
            truncated = false;
        }
        self.stats.samples += 1;
        self.stats.copied_bytes = self.stats.copied_bytes.saturating_add(stack.len() as u64);
        let mut outcome = Outcome::Other;
        if truncated {
            self.stats.truncated += 1;
            if past_copy && !reached_top {
                self.stats.out_of_copy += 1;
                outcome = Outcome::OutOfCopy;
            } else if past_copy {
                outcome = Outcome::PastEnd;
            }
        } else {
            self.stats.stack_bytes_used.push(used as u32);
            outcome = Outcome::Complete(used as u32);
        }
        let id = (!frames.is_empty()).then(|| {
            let next = UNWOUND_ID_BIT | self.next_id;
            *self.stacks.entry(frames).or_insert_with(|| {
                // 2^31 distinct stacks wrap into ids of stacks let go long ago.
                self.next_id = self.next_id.wrapping_add(1) & !UNWOUND_ID_BIT;
                next
            })
        });
        self.stats.total_ns += started.elapsed().as_nanos() as u64;
        Unwound {
            id,
            truncated,
            outcome,
        }
    }
}

/// The dynamic loader's entry (`_start`: `mov %rsp,%rdi; call _dl_start`) has no CFI, unlike
/// an executable's, which marks its return address undefined: a stack whose outermost frame
/// returns into the first instructions of an entry point ended where the kernel started the
/// process, and is complete though the unwinder could not step past it.
fn returns_into_entry(
    space: &AddressSpace,
    time_ns: u64,
    modules: &ModuleStore,
    addr: u64,
) -> bool {
    const CALL_WITHIN: u64 = 16;
    let Some(m) = space.find_at(addr, time_ns) else {
        return false;
    };
    let Some(sections) = m
        .module
        .and_then(|id| modules.get(id))
        .and_then(|f| f.sections())
    else {
        return false;
    };
    let Some(svma) = sections.bias(m).and_then(|bias| addr.checked_sub(bias)) else {
        return false;
    };
    sections.entry != 0 && svma > sections.entry && svma - sections.entry <= CALL_WITHIN
}

fn vdso_sections(pid: u32, m: &Mapping) -> Option<Sections> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut image = vec![0u8; usize::try_from(m.end.checked_sub(m.start)?).ok()?];
    mem.read_exact_at(&mut image, m.start).ok()?;
    Sections::parse(Arc::new(image))
}

/// Whether most of an executable's own functions set up a frame pointer (`push %rbp`, then
/// `mov %rsp,%rbp` within the prologue, which compilers interleave with other setup): the
/// `auto` call graph walks frame pointers for such programs and unwinds with DWARF otherwise.
/// Rust's prebuilt standard library keeps frame pointers whatever the program's own flags,
/// so its functions (and those of the crates it is built from) do not count.
pub fn has_frame_pointers(bytes: &[u8]) -> Option<bool> {
    frame_pointer_share(bytes).map(|(with, total)| with * 2 > total)
}

/// Mangled-name fragments of the crates Rust ships prebuilt (`_ZN3std…`, `_RNv…4core…`).
const PREBUILT_RUST_CRATES: &[&str] = &[
    "3std",
    "4core",
    "5alloc",
    "17compiler_builtins",
    "9hashbrown",
    "5gimli",
    "9addr2line",
    "11miniz_oxide",
    "6object",
    "14rustc_demangle",
    "10std_detect",
    "12panic_unwind",
    "6adler2",
    "6memchr",
    "7___rustc",
    "rust_eh_personality",
];

/// (own functions that set up a frame pointer, own functions), counting functions of 16 bytes
/// or more; None without a symbol table.
pub fn frame_pointer_share(bytes: &[u8]) -> Option<(u32, u32)> {
    use object::ObjectSymbol;
    let file = object::File::parse(bytes).ok()?;
    let text = file.section_by_name(".text")?;
    let data = text.data().ok()?;
    let base = text.address();
    let (mut with, mut total) = (0u32, 0u32);
    for sym in file.symbols() {
        if sym.kind() != object::SymbolKind::Text || sym.size() < 16 {
            continue;
        }
        let name = sym.name().unwrap_or("");
        let head = name.get(..name.len().min(48)).unwrap_or(name);
        if PREBUILT_RUST_CRATES.iter().any(|c| head.contains(c)) {
            continue;
        }
        let Some(start) = sym.address().checked_sub(base) else {
            continue;
        };
        // A symbol's address comes from the file: any value, so no overflow on the way.
        let (Ok(from), Ok(to)) = (
            usize::try_from(start),
            usize::try_from(start.saturating_add(24).min(data.len() as u64)),
        ) else {
            continue;
        };
        let Some(code) = data.get(from..to) else {
            continue;
        };
        let code = code.strip_prefix(&[0xf3, 0x0f, 0x1e, 0xfa]).unwrap_or(code);
        total += 1;
        let sets_up_frame = code.first() == Some(&0x55)
            && code
                .get(..16)
                .unwrap_or(code)
                .windows(3)
                .any(|w| w == [0x48, 0x89, 0xe5]);
        if sets_up_frame {
            with += 1;
        }
    }
    // A stripped file has no symbols to judge by: unwinding with DWARF is the safe side.
    (total > 0).then_some((with, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sections(segments: Vec<(u64, u64, u64)>) -> Sections {
        Sections {
            text: None,
            eh_frame: None,
            eh_frame_hdr: None,
            got: None,
            debug_frame: None,
            segments,
            entry: 0,
        }
    }

    fn mapping(start: u64, offset: u64) -> Mapping {
        Mapping {
            start,
            end: start + 0x40000,
            offset,
            path: "/bin/x".into(),
            identity: None,
            module: None,
            since_ns: 0,
        }
    }

    #[test]
    fn bias_of_segments_that_do_not_start_on_a_page() {
        // rust-lld: R at 0, R E at file 0x17050 / address 0x18050 (one page further).
        let s = sections(vec![
            (0, 0x17050, 0),
            (0x17050, 0x3fde0, 0x18050),
            (0x56e30, 0x2a60, 0x58e30),
        ]);
        let base = 0x5600_0000_0000;
        assert_eq!(s.bias(&mapping(base + 0x18000, 0x17000)), Some(base));
    }

    #[test]
    fn bias_of_page_aligned_segments() {
        // GNU ld: the text segment at the same file offset and address.
        let s = sections(vec![(0, 0x1000, 0), (0x1000, 0x2000, 0x1000)]);
        let base = 0x5555_5555_4000;
        assert_eq!(s.bias(&mapping(base + 0x1000, 0x1000)), Some(base));
        // Non-PIE: linked at 0x400000, loaded there.
        let s = sections(vec![(0, 0x1000, 0x400000), (0x1000, 0x2000, 0x401000)]);
        assert_eq!(s.bias(&mapping(0x401000, 0x1000)), Some(0));
    }

    #[test]
    fn own_test_binary_is_judged_by_its_own_functions() {
        let exe = std::fs::read("/proc/self/exe").expect("own executable");
        let (with, total) = frame_pointer_share(&exe).expect("symbols");
        assert!(total > 0 && with <= total);
    }

    #[test]
    fn a_library_loaded_over_another_swaps_its_module_by_the_samples_time() {
        let lib = |path: &str, since_ns| Mapping {
            path: path.into(),
            since_ns,
            ..mapping(0x7000_0000, 0)
        };
        let mut space = AddressSpace::new(1);
        space.add(lib("/lib/a.so", 100));
        space.add(lib("/lib/b.so", 300));
        let store = ModuleStore::default();
        let mut u = Unwinder::default();
        let held = |u: &Unwinder| -> Vec<String> {
            u.spaces[&0].added.values().map(|k| k.3.clone()).collect()
        };
        u.sync(0, &space, 200, &store);
        assert_eq!(held(&u), ["/lib/a.so"]);
        u.sync(0, &space, 400, &store);
        assert_eq!(held(&u), ["/lib/b.so"]);
        // A sample read late, from before the reload.
        u.sync(0, &space, 250, &store);
        assert_eq!(held(&u), ["/lib/a.so"]);
        assert_eq!(u.spaces[&0].seen, (2, 0));
    }
}
