/* Off-CPU ground truth. The main thread runs CYCLES cycles of: compute (busy, ~4 ms, span
 * "compute"), nap (nanosleep 3 ms, span "nap"), wait_reply (asks a helper thread over a
 * pipe and blocks in read until it answers 3 ms later, span "wait_reply"). It times each
 * phase itself and prints, at the end, "nap_ns N wait_ns N compute_ns N total_ns N": the
 * known values the profiler's off-CPU totals are checked against. Waits for a line on stdin
 * (the profiler is attached) before it starts. */
#define PROFILER_PROBES_IMPLEMENTATION
#include "profiler_probes.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int CYCLES = 150;
static int request_pipe[2], reply_pipe[2];
static volatile unsigned long sink;

PROFILER_SPAN_META(compute_meta, "compute", "offcpu");
PROFILER_SPAN_META(nap_meta, "nap", "offcpu");
PROFILER_SPAN_META(wait_meta, "wait_reply", "offcpu");

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

__attribute__((noinline)) void compute(void) {
    long long end = now_ns() + 4000000;
    unsigned long x = 1;
    while (now_ns() < end)
        for (int i = 0; i < 1000; i++) x = x * 6364136223846793005UL + 1;
    sink = x;
}

__attribute__((noinline)) void nap(void) {
    struct timespec d = {0, 3000000};
    nanosleep(&d, NULL);
}

__attribute__((noinline)) void wait_reply(void) {
    char c = 'q';
    if (write(request_pipe[1], &c, 1) != 1) abort();
    if (read(reply_pipe[0], &c, 1) != 1) abort();
}

static void *helper(void *arg) {
    (void)arg;
    char c;
    while (read(request_pipe[0], &c, 1) == 1) {
        struct timespec d = {0, 3000000};
        nanosleep(&d, NULL);
        if (write(reply_pipe[1], &c, 1) != 1) abort();
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) CYCLES = atoi(argv[1]);
    if (pipe(request_pipe) || pipe(reply_pipe)) return 1;
    pthread_t h;
    pthread_create(&h, NULL, helper, NULL);
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    long long nap_ns = 0, wait_ns = 0, compute_ns = 0, start = now_ns();
    for (int i = 0; i < CYCLES; i++) {
        uint64_t s = profiler_span_start(&compute_meta, 0);
        long long t0 = now_ns();
        compute();
        long long t1 = now_ns();
        profiler_span_finish(s);
        s = profiler_span_start(&nap_meta, 0);
        long long t2 = now_ns();
        nap();
        long long t3 = now_ns();
        profiler_span_finish(s);
        s = profiler_span_start(&wait_meta, 0);
        long long t4 = now_ns();
        wait_reply();
        long long t5 = now_ns();
        profiler_span_finish(s);
        compute_ns += t1 - t0;
        nap_ns += t3 - t2;
        wait_ns += t5 - t4;
    }
    long long total = now_ns() - start;
    close(request_pipe[1]);
    pthread_join(h, NULL);
    printf("nap_ns %lld wait_ns %lld compute_ns %lld total_ns %lld\n", nap_ns, wait_ns,
           compute_ns, total);
    return 0;
}
