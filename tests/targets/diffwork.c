/* Two "builds" of one workload for `profiler diff`, chosen by arguments.
 * Usage: diffwork ITERATIONS A_FACTOR FLUSH_FACTOR [rt]
 * Each iteration: hot_a computes A_FACTOR ms of CPU time, encode() (through hot_b) 1 ms, and
 * flush() sleeps FLUSH_FACTOR ms. The base build is `1 1`; the regressed one `2 1.2` does
 * twice the work in hot_a and makes the flush span 20% slower, encode unchanged.
 * CPU work is measured on the thread's CPU clock, so the CPU split does not depend on what
 * else the machine runs; `rt` runs the program SCHED_FIFO, so that its spans' durations do
 * not depend on it either (a busy machine delays wakeups by milliseconds). Even so, a
 * virtual machine's wakeups sometimes come milliseconds late, often enough to move a p95:
 * the program times each flush on its own clock and prints the mean and nearest-rank p95,
 * which the profiler's figures must agree with. */
#include <sched.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile unsigned long sink;

static double thread_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Each function spins on its own loop so that the sampled leaf is the function itself. */
__attribute__((noinline)) void hot_a(double budget) {
    double end = thread_cpu() + budget;
    unsigned long x = sink;
    while (thread_cpu() < end)
        for (int i = 0; i < 20000; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    sink = x;
}

__attribute__((noinline)) void hot_b(double budget) {
    double end = thread_cpu() + budget;
    unsigned long x = sink;
    while (thread_cpu() < end)
        for (int i = 0; i < 20000; i++) x = x * 2862933555777941757UL + 3037000493UL;
    sink = x;
}

__attribute__((noinline)) void encode(void) { hot_b(0.001); }

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

__attribute__((noinline)) double flush(double ms) {
    struct timespec ts = {0, (long)(ms * 1e6)};
    double start = mono();
    nanosleep(&ts, NULL);
    return mono() - start;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: diffwork ITERATIONS A_FACTOR FLUSH_FACTOR [rt]\n");
        return 2;
    }
    if (argc > 4 && strcmp(argv[4], "rt") == 0) {
        struct sched_param sp = {.sched_priority = 10};
        if (sched_setscheduler(0, SCHED_FIFO, &sp) != 0) perror("diffwork: SCHED_FIFO");
    }
    int iterations = atoi(argv[1]);
    double a = atof(argv[2]), f = atof(argv[3]);
    if (iterations < 1) return 2;
    double *took = malloc(sizeof(double) * iterations), sum = 0;
    if (!took) return 1;
    for (int i = 0; i < iterations; i++) {
        hot_a(0.001 * a);
        encode();
        took[i] = flush(f);
        sum += took[i];
    }
    qsort(took, iterations, sizeof(double), by_value);
    /* Nearest rank, as the profiler computes it. */
    int rank = (95 * iterations + 99) / 100;
    printf("done %d\nflush mean_us %.1f p95_us %.1f\n", iterations, sum / iterations * 1e6,
           took[rank - 1] * 1e6);
    free(took);
    return 0;
}
