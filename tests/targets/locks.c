/* Lock contention ground truth. Two threads take one static mutex (big_lock) ROUNDS times
 * each and hold it ~1 ms (busy), inside a span "locked_work". Each thread measures its own
 * time inside pthread_mutex_lock. Prints "lock_wait_ns N rounds N". Waits for a line on stdin
 * (the profiler is attached) before it starts. Arguments: ROUNDS, and DEPTH: the threads
 * first descend DEPTH frames of ~200 bytes (`descend`), so that the waits' stacks are deep. */
#define PROFILER_PROBES_IMPLEMENTATION
#include "profiler_probes.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int ROUNDS = 200;
static int DEPTH = 0;
static pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;
static long long waited[2];
static volatile unsigned long sink;

PROFILER_SPAN_META(work_meta, "locked_work", "locks");

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

__attribute__((noinline)) void hold_it(void) {
    long long end = now_ns() + 1000000;
    unsigned long x = 1;
    while (now_ns() < end)
        for (int i = 0; i < 100; i++) x = x * 6364136223846793005UL + 1;
    sink = x;
}

__attribute__((noinline)) void take_lock(int me) {
    long long t0 = now_ns();
    pthread_mutex_lock(&big_lock);
    waited[me] += now_ns() - t0;
}

static void *worker(void *arg) {
    int me = (int)(long)arg;
    for (int i = 0; i < ROUNDS; i++) {
        uint64_t s = profiler_span_start(&work_meta, 0);
        take_lock(me);
        hold_it();
        pthread_mutex_unlock(&big_lock);
        profiler_span_finish(s);
    }
    return NULL;
}

__attribute__((noinline)) void *descend(long me, int left) {
    volatile char frame[200];
    frame[0] = (char)left;
    void *r = left > 0 ? descend(me, left - 1) : worker((void *)me);
    /* Used after the call: the call is not a tail call, and each frame stays. */
    frame[1] = frame[0];
    return r;
}

static void *deep_worker(void *arg) { return descend((long)arg, DEPTH); }

int main(int argc, char **argv) {
    if (argc > 1) ROUNDS = atoi(argv[1]);
    if (argc > 2) DEPTH = atoi(argv[2]);
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    pthread_t t[2];
    for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, DEPTH > 0 ? deep_worker : worker, (void *)i);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    printf("lock_wait_ns %lld rounds %d\n", waited[0] + waited[1], ROUNDS);
    return 0;
}
