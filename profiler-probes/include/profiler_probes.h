/*
 * profiler_probes.h - span probes for the profiler, for C and C++. Header only.
 *
 * In exactly one translation unit of the program:
 *
 *     #define PROFILER_PROBES_IMPLEMENTATION
 *     #include "profiler_probes.h"
 *
 * and plain `#include "profiler_probes.h"` everywhere else. Then:
 *
 *     PROFILER_SPAN_META(parse_meta, "parse", "myapp");     // once per callsite
 *     uint64_t id = profiler_span_start(&parse_meta, 0);    // 0 = root, else the parent's id
 *     ...
 *     profiler_span_finish(id);
 *
 * The four profiler_span_* functions do nothing; the profiler finds them by name and places
 * uprobes on them (at the symbol, or at symbol + 1 on Linux 6.18+). Without a profiler a span
 * costs a few calls to empty functions. Stable ABI: names, arguments, the metadata layout and
 * the code layout never change; versions only add.
 * See profiler-probes/README.md.
 */
#ifndef PROFILER_PROBES_H
#define PROFILER_PROBES_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PROFILER_SPAN_META_VERSION 1

/* Static metadata of a span callsite; the profiler reads it from the program's memory, so it
 * must live as long as the process. Strings: NUL-terminated UTF-8, or NULL when unknown. */
struct profiler_span_meta {
    uint32_t version; /* PROFILER_SPAN_META_VERSION */
    uint32_t line;
    const char *name;
    const char *target; /* module or component */
    const char *file;
};

/* Defines `static const struct profiler_span_meta var` for this file and line. `name` and
 * `target` must be string literals (or other static strings, or NULL). */
#define PROFILER_SPAN_META(var, name, target)                                                \
    static const struct profiler_span_meta var = {PROFILER_SPAN_META_VERSION, __LINE__, (name), \
                                                  (target), __FILE__}

/* The ABI. Span ids are nonzero and never reused within the process. */
/* Span `id` exists, child of `parent` (0 = root). */
void profiler_span_begin(uint64_t id, uint64_t parent, const struct profiler_span_meta *meta);
/* Span `id` is finished. */
void profiler_span_end(uint64_t id);
/* Span `id` starts running on the calling thread. */
void profiler_span_enter(uint64_t id);
/* Span `id` stops running on the calling thread. */
void profiler_span_exit(uint64_t id);

/* The next span id, shared by every translation unit (and with the Rust crate, whose strong
 * definition wins over ours when both are linked into one binary). */
extern uint64_t profiler_span_id_next;

/* A fresh span id: nonzero, unique in the process. */
static inline uint64_t profiler_span_new_id(void) {
    return __atomic_fetch_add(&profiler_span_id_next, 1, __ATOMIC_RELAXED);
}

/* A new span that begins and starts running on this thread; returns its id. */
static inline uint64_t profiler_span_start(const struct profiler_span_meta *meta,
                                           uint64_t parent) {
    uint64_t id = profiler_span_new_id();
    profiler_span_begin(id, parent, meta);
    profiler_span_enter(id);
    return id;
}

/* Stops span `id` running on this thread and finishes it. */
static inline void profiler_span_finish(uint64_t id) {
    profiler_span_exit(id);
    profiler_span_end(id);
}

#ifdef PROFILER_PROBES_IMPLEMENTATION

/* Weak, like the functions below: a second implementation unit, or the Rust crate in the same
 * binary, is not a link error and everyone ends up using one definition. */
__attribute__((weak)) uint64_t profiler_span_id_next = 1;

#if defined(__x86_64__)
/* Assembly, not C, so the bytes are the same at every optimization level and with any flags
 * (no frame setup, no -pg/-fcf-protection prologue): the probed instruction decides what a
 * uprobe hit costs. `nop` at the symbol, which every kernel emulates (a single-stepped
 * instruction would cost ~20x more); `nopl` (5-byte nop) at symbol + 1, which Linux 6.18+
 * optimizes into a call to a uprobe trampoline, for profilers that know their kernel. Bytes,
 * not mnemonics, so -masm=intel and assembler choices cannot change them. Identical to the
 * Rust crate's; 16-byte aligned so the nopl never crosses a page (it would not be optimized);
 * one section so identical code folding cannot merge the four functions. */
#define PROFILER_PROBES_FN_(name)                                                         \
    ".balign 16\n"                                                                        \
    ".weak " #name "\n"                                                                   \
    ".type " #name ", @function\n" #name ":\n"                                            \
    ".byte 0x90\n"                         /* nop */                                      \
    ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n" /* nopl 0x0(%rax,%rax,1) */                    \
    ".byte 0xc3\n"                         /* ret */                                      \
    ".size " #name ", . - " #name "\n"
/* clang-format off */
__asm__(".pushsection .text.profiler_probes, \"ax\", @progbits\n"
        PROFILER_PROBES_FN_(profiler_span_begin)
        PROFILER_PROBES_FN_(profiler_span_end)
        PROFILER_PROBES_FN_(profiler_span_enter)
        PROFILER_PROBES_FN_(profiler_span_exit)
        ".popsection\n");
/* clang-format on */
#undef PROFILER_PROBES_FN_
#else
/* Other architectures: plain functions the compiler must keep, so the header still builds. */
__attribute__((weak, noinline)) void profiler_span_begin(uint64_t id, uint64_t parent,
                                                         const struct profiler_span_meta *meta) {
    __asm__ volatile("" : : "r"(id), "r"(parent), "r"(meta) : "memory");
}
__attribute__((weak, noinline)) void profiler_span_end(uint64_t id) {
    __asm__ volatile("" : : "r"(id) : "memory");
}
__attribute__((weak, noinline)) void profiler_span_enter(uint64_t id) {
    __asm__ volatile("" : : "r"(id) : "memory");
}
__attribute__((weak, noinline)) void profiler_span_exit(uint64_t id) {
    __asm__ volatile("" : : "r"(id) : "memory");
}
#endif

#endif /* PROFILER_PROBES_IMPLEMENTATION */

#ifdef __cplusplus
}
#endif

#endif /* PROFILER_PROBES_H */
