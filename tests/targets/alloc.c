/* Allocation ground truth. Three sites allocate and free 60/30/10% of ROUNDS*10 MiB, each
 * with its own allocator call and block size (site_60: malloc of 64 KiB, site_30: calloc of
 * 4 KiB, site_10: realloc(NULL, 1 MiB), which glibc serves by calling malloc inside: it must
 * count once), each inside a span of its name. A fourth site, leak, allocates 32 blocks of
 * 2 MiB (64 MiB) and never frees them. Prints "bytes_60 N bytes_30 N bytes_10 N leak N",
 * the bytes each site asked for. Waits for a line on stdin (the profiler is attached), unless
 * its first argument is "now" (under `profiler run`). */
#define PROFILER_PROBES_IMPLEMENTATION
#include "profiler_probes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ROUNDS = 100;
static void *volatile keep;
static void *volatile none;
static void *leaked[32];

PROFILER_SPAN_META(meta_60, "site_60", "alloc");
PROFILER_SPAN_META(meta_30, "site_30", "alloc");
PROFILER_SPAN_META(meta_10, "site_10", "alloc");

/* Each round: 6 MiB here, 3 MiB in site_30, 1 MiB in site_10. */
__attribute__((noinline)) unsigned long long site_60(void) {
    for (int i = 0; i < 96; i++) {
        char *p = malloc(64 << 10);
        if (!p) abort();
        p[0] = 1;
        keep = p;
        free(p);
    }
    return 96ULL << 16;
}

__attribute__((noinline)) unsigned long long site_30(void) {
    for (int i = 0; i < 768; i++) {
        char *p = calloc(1, 4 << 10);
        if (!p) abort();
        keep = p;
        free(p);
    }
    return 768ULL << 12;
}

__attribute__((noinline)) unsigned long long site_10(void) {
    /* Volatile: the compiler would make realloc(NULL, n) a malloc. */
    char *p = realloc(none, 1 << 20);
    if (!p) abort();
    keep = p;
    free(p);
    return 1ULL << 20;
}

__attribute__((noinline)) unsigned long long leak(void) {
    for (int i = 0; i < 32; i++) {
        leaked[i] = malloc(2 << 20);
        if (!leaked[i]) abort();
    }
    return 32ULL << 21;
}

int main(int argc, char **argv) {
    int now = argc > 1 && strcmp(argv[1], "now") == 0;
    if (argc > 2) ROUNDS = atoi(argv[2]);
    else if (argc > 1 && !now) ROUNDS = atoi(argv[1]);
    if (!now) {
        printf("ready\n");
        fflush(stdout);
        char line[16];
        if (!fgets(line, sizeof line, stdin)) return 1;
    }
    unsigned long long b60 = 0, b30 = 0, b10 = 0;
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t s = profiler_span_start(&meta_60, 0);
        b60 += site_60();
        profiler_span_finish(s);
        s = profiler_span_start(&meta_30, 0);
        b30 += site_30();
        profiler_span_finish(s);
        s = profiler_span_start(&meta_10, 0);
        b10 += site_10();
        profiler_span_finish(s);
    }
    unsigned long long lk = leak();
    printf("bytes_60 %llu bytes_30 %llu bytes_10 %llu leak %llu\n", b60, b30, b10, lk);
    fflush(stdout);
    return 0;
}
