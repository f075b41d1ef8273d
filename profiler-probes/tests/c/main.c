/* Uses profiler_probes.h as a program would, from two translation units; valid C11 and C++17.
 * tests/first_instruction.rs builds it at several optimization levels, runs it and
 * disassembles it. */
#define PROFILER_PROBES_IMPLEMENTATION
#include "profiler_probes.h"

#include <stdio.h>

uint64_t other_tu_span(uint64_t parent); /* other.c */

PROFILER_SPAN_META(main_meta, "main", "probe-test");

int main(void) {
    uint64_t root = profiler_span_start(&main_meta, 0);
    uint64_t child = other_tu_span(root);
    uint64_t child2 = other_tu_span(root);
    uint64_t after = profiler_span_new_id();
    profiler_span_finish(root);
    /* One counter for the whole program: ids from both units are distinct and increasing. */
    if (root == 0 || !(root < child && child < child2 && child2 < after)) {
        fprintf(stderr, "ids not unique: %llu %llu %llu %llu\n", (unsigned long long)root,
                (unsigned long long)child, (unsigned long long)child2, (unsigned long long)after);
        return 1;
    }
    printf("ok %llu %llu %llu\n", (unsigned long long)root, (unsigned long long)child,
           (unsigned long long)child2);
    return 0;
}
