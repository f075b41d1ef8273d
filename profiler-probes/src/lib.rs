//! Span probes for the profiler.
//!
//! A program marks its spans by calling four functions with a fixed C ABI (below). They do
//! nothing: the profiler finds them by symbol name and places uprobes on them, so when no
//! profiler is attached a span costs four calls to empty functions, and when one is attached
//! it sees every span with its id, parent and static metadata.
//!
//! - Rust with `tracing`: `tracing_subscriber::registry().with(profiler_probes::layer()).init()`.
//! - Rust without `tracing`: [`next_span_id`], [`begin`]/[`enter`]/[`exit`]/[`end`] and
//!   [`span_meta!`].
//! - C/C++: `include/profiler_probes.h`, no library to link.
//!
//! By hand:
//!
//! ```
//! use profiler_probes::{SpanMeta, begin, end, enter, exit, next_span_id};
//!
//! static PARSE: SpanMeta = SpanMeta::new(c"parse", c"app", c"main.rs", 7);
//! let id = next_span_id();
//! begin(id, 0, &PARSE); // or `profiler_probes::span_meta!("parse")` for this file and line
//! enter(id);
//! // ... the work ...
//! exit(id);
//! end(id);
//! ```
//!
//! The ABI is stable: symbol names, arguments, the [`SpanMeta`] layout and the code layout (a
//! 1-byte nop at each symbol, a 5-byte nop at symbol + 1: where a profiler may probe) never
//! change; a new version only adds (fields at the end, announced by [`SpanMeta::version`]).

use core::ffi::{CStr, c_char};
use core::sync::atomic::{AtomicU64, Ordering};

#[cfg(feature = "tracing")]
mod layer;
#[cfg(feature = "tracing")]
pub use layer::{ProbeLayer, layer};

/// Static metadata of a span callsite, read by the profiler from the program's memory when a
/// span begins. Strings are NUL-terminated UTF-8, or null when unknown; everything must live
/// as long as the process (the profiler may read it any time after `begin`).
#[repr(C)]
#[derive(Debug)]
pub struct SpanMeta {
    /// [`SpanMeta::VERSION`]: tells the profiler which fields exist.
    pub version: u32,
    /// Source line, 0 when unknown.
    pub line: u32,
    pub name: *const c_char,
    /// Module path or component, like `tracing`'s target.
    pub target: *const c_char,
    /// Source file.
    pub file: *const c_char,
}

// Only ever built from static (or leaked) strings that nobody mutates: sharing is sound.
unsafe impl Sync for SpanMeta {}
unsafe impl Send for SpanMeta {}

impl SpanMeta {
    /// The layout version this crate writes.
    pub const VERSION: u32 = 1;

    /// Metadata from static C strings, e.g. `SpanMeta::new(c"parse", c"app", c"main.rs", 12)`.
    pub const fn new(
        name: &'static CStr,
        target: &'static CStr,
        file: &'static CStr,
        line: u32,
    ) -> Self {
        Self {
            version: Self::VERSION,
            line,
            name: name.as_ptr(),
            target: target.as_ptr(),
            file: file.as_ptr(),
        }
    }
}

/// A `&'static SpanMeta` for this callsite: the given name (a string literal), the module
/// path as target, and this file and line.
#[macro_export]
macro_rules! span_meta {
    ($name:literal) => {{
        static META: $crate::SpanMeta = $crate::SpanMeta {
            version: $crate::SpanMeta::VERSION,
            line: line!(),
            name: concat!($name, "\0").as_ptr().cast(),
            target: concat!(module_path!(), "\0").as_ptr().cast(),
            file: concat!(file!(), "\0").as_ptr().cast(),
        };
        &META
    }};
}

/// Defines the ABI functions. On ELF x86-64 each is `nop; nopl 0x0(%rax,%rax,1); ret`
/// (90 0f 1f 44 00 00 c3), in assembly, the same bytes as the C header, so that no compiler
/// setting can change them: the probed instruction decides what a uprobe hit costs (README.md).
/// - At the symbol, a 1-byte nop: every kernel (since 3.x) emulates it, ~20x cheaper than a
///   single-stepped instruction. Profilers probe here by default.
/// - At symbol + 1, a 5-byte nop: Linux 6.18+ turns a probe there into a call to a uprobe
///   trampoline (no trap, ~1.7x cheaper again) and 6.16/6.17 emulate it, but older kernels
///   single-step it, so only a profiler that knows its kernel probes there. The binaries are
///   built once and run on any kernel; the profiler chooses at attach time.
///
/// Bytes, not mnemonics: assemblers shorten `nop dword ptr [rax + rax + 0]` to 4 bytes, which
/// the kernel does not optimize. Not naked functions: those cannot be aligned on stable Rust
/// (rustc aligns them to 4), and a nop5 that crosses a page is never optimized; `.balign 16`
/// rules that out. One asm block in one section also means a linker's identical code folding
/// cannot merge the four (that would mix up their probes), and a section GC keeps all or none.
///
/// Elsewhere they are plain never-inlined functions, so the crate still builds.
macro_rules! abi_fns {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*);)*) => {
        #[cfg(all(target_arch = "x86_64", any(target_os = "linux", target_os = "android")))]
        unsafe extern "C" {
            $($(#[$doc])* pub safe fn $name($($arg: $ty),*);)*
        }

        #[cfg(all(target_arch = "x86_64", any(target_os = "linux", target_os = "android")))]
        core::arch::global_asm!(
            ".pushsection .text.profiler_probes, \"ax\", @progbits",
            $(concat!(
                ".balign 16\n",
                ".globl ", stringify!($name), "\n",
                ".type ", stringify!($name), ", @function\n",
                stringify!($name), ":\n",
                ".byte 0x90\n", // nop
                ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n", // nopl 0x0(%rax,%rax,1)
                ".byte 0xc3\n", // ret
                ".size ", stringify!($name), ", . - ", stringify!($name),
            ),)*
            ".popsection",
        );

        $(
            $(#[$doc])*
            #[cfg(not(all(target_arch = "x86_64", any(target_os = "linux", target_os = "android"))))]
            #[unsafe(no_mangle)]
            #[inline(never)]
            pub extern "C" fn $name($($arg: $ty),*) {
                // Keeps the call and its arguments from being optimized away.
                core::hint::black_box(($($arg,)*));
            }
        )*
    };
}

abi_fns! {
    /// ABI: span `id` exists (`parent` 0 = root), described by `meta`. Prefer [`begin`].
    fn profiler_span_begin(id: u64, parent: u64, meta: *const SpanMeta);
    /// ABI: span `id` is finished. Prefer [`end`].
    fn profiler_span_end(id: u64);
    /// ABI: span `id` starts running on the calling thread. Prefer [`enter`].
    fn profiler_span_enter(id: u64);
    /// ABI: span `id` stops running on the calling thread. Prefer [`exit`].
    fn profiler_span_exit(id: u64);
}

/// The next span id. Exported under this name so that the C header's `profiler_span_new_id()`
/// (whose own definition is weak) uses the same counter when C and Rust share a binary.
#[unsafe(export_name = "profiler_span_id_next")]
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh span id: nonzero and never returned twice in this process (a 64-bit counter
/// cannot wrap in practice).
#[inline]
pub fn next_span_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Span `id` (from [`next_span_id`]) exists, child of `parent` (0 = root).
#[inline]
pub fn begin(id: u64, parent: u64, meta: &'static SpanMeta) {
    #[cfg(test)]
    record::push(record::Call::Begin(id, parent, meta));
    profiler_span_begin(id, parent, meta);
}

/// Span `id` is finished; its id is never used again.
#[inline]
pub fn end(id: u64) {
    #[cfg(test)]
    record::push(record::Call::End(id));
    profiler_span_end(id);
}

/// Span `id` starts running on this thread (async tasks: at every poll).
#[inline]
pub fn enter(id: u64) {
    #[cfg(test)]
    record::push(record::Call::Enter(id));
    profiler_span_enter(id);
}

/// Span `id` stops running on this thread.
#[inline]
pub fn exit(id: u64) {
    #[cfg(test)]
    record::push(record::Call::Exit(id));
    profiler_span_exit(id);
}

/// Unit tests cannot see probe hits, so the wrappers also log their calls per thread.
#[cfg(test)]
pub(crate) mod record {
    use super::SpanMeta;
    use std::cell::RefCell;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Call {
        Begin(u64, u64, &'static SpanMeta),
        End(u64),
        Enter(u64),
        Exit(u64),
    }

    // Compared by address: metadata is identified by where it lives, as the profiler does.
    impl PartialEq for SpanMeta {
        fn eq(&self, other: &Self) -> bool {
            core::ptr::eq(self, other)
        }
    }
    impl Eq for SpanMeta {}

    thread_local!(static CALLS: RefCell<Vec<Call>> = const { RefCell::new(Vec::new()) });

    pub fn push(c: Call) {
        CALLS.with(|v| v.borrow_mut().push(c));
    }

    pub fn take() -> Vec<Call> {
        CALLS.with(|v| v.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};
    use profiler_common::abi::{META_VERSION, SpanMetaRaw};

    /// The profiler probes `symbol + 1` only when it finds exactly these bytes there.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn machine_code_is_the_one_the_profiler_expects() {
        use profiler_common::abi::X86_64_CODE;
        let functions: [*const u8; 4] = [
            profiler_span_begin as *const u8,
            profiler_span_end as *const u8,
            profiler_span_enter as *const u8,
            profiler_span_exit as *const u8,
        ];
        for f in functions {
            // SAFETY: reading the first bytes of our own functions' code.
            let code = unsafe { core::slice::from_raw_parts(f, X86_64_CODE.len()) };
            assert_eq!(code, X86_64_CODE);
        }
    }

    #[test]
    fn layout_matches_the_profiler() {
        assert_eq!(size_of::<SpanMeta>(), 32);
        assert_eq!(size_of::<SpanMeta>(), size_of::<SpanMetaRaw>());
        assert_eq!(
            offset_of!(SpanMeta, version),
            offset_of!(SpanMetaRaw, version)
        );
        assert_eq!(offset_of!(SpanMeta, line), offset_of!(SpanMetaRaw, line));
        assert_eq!(offset_of!(SpanMeta, name), offset_of!(SpanMetaRaw, name));
        assert_eq!(
            offset_of!(SpanMeta, target),
            offset_of!(SpanMetaRaw, target)
        );
        assert_eq!(offset_of!(SpanMeta, file), offset_of!(SpanMetaRaw, file));
        assert_eq!(SpanMeta::VERSION, META_VERSION);
    }

    #[test]
    fn symbols_are_the_abi_names() {
        // The profiler finds the functions by these names.
        let ours: [(&str, usize); 4] = [
            (
                "profiler_span_begin",
                profiler_span_begin as *const () as usize,
            ),
            ("profiler_span_end", profiler_span_end as *const () as usize),
            (
                "profiler_span_enter",
                profiler_span_enter as *const () as usize,
            ),
            (
                "profiler_span_exit",
                profiler_span_exit as *const () as usize,
            ),
        ];
        let names: Vec<&str> = ours.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, profiler_common::abi::SYMBOLS);
        // Four distinct functions: folding two would make their probes indistinguishable.
        let mut addrs: Vec<usize> = ours.iter().map(|(_, a)| *a).collect();
        addrs.sort_unstable();
        addrs.dedup();
        assert_eq!(addrs.len(), 4);
    }

    #[test]
    fn ids_are_nonzero_and_unique() {
        let a = next_span_id();
        let b = next_span_id();
        assert!(a != 0 && b > a);
    }

    #[test]
    fn span_meta_macro_fills_every_field() {
        let m: &'static SpanMeta = span_meta!("work");
        let s = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_str().unwrap();
        assert_eq!(m.version, 1);
        assert_eq!(m.line, line!() - 3);
        assert_eq!(s(m.name), "work");
        assert_eq!(s(m.target), module_path!());
        assert_eq!(s(m.file), file!());
        // One static per callsite.
        let f = || span_meta!("x") as *const SpanMeta;
        assert_eq!(f(), f());
    }

    #[test]
    fn wrappers_call_through() {
        let meta = span_meta!("w");
        let id = next_span_id();
        begin(id, 0, meta);
        enter(id);
        exit(id);
        end(id);
        use record::Call::*;
        assert_eq!(
            record::take(),
            [Begin(id, 0, meta), Enter(id), Exit(id), End(id)]
        );
    }
}
