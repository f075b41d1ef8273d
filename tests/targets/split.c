/* CPU split between two functions by thread CPU time: hot_a gets 70%, hot_b 30%.
 * Usage: split [seconds]  (default 30). Prints "ready <pid>" once running. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

static double now(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Each function spins on its own loop so that the sampled leaf is the function itself. */
__attribute__((noinline)) void hot_a(double budget) {
    double end = now(CLOCK_THREAD_CPUTIME_ID) + budget;
    unsigned long x = sink;
    while (now(CLOCK_THREAD_CPUTIME_ID) < end)
        for (int i = 0; i < 20000; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    sink = x;
}

__attribute__((noinline)) void hot_b(double budget) {
    double end = now(CLOCK_THREAD_CPUTIME_ID) + budget;
    unsigned long x = sink;
    while (now(CLOCK_THREAD_CPUTIME_ID) < end)
        for (int i = 0; i < 20000; i++) x = x * 2862933555777941757UL + 3037000493UL;
    sink = x;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 30;
    double stop = now(CLOCK_MONOTONIC) + seconds;
    printf("ready %d\n", getpid());
    fflush(stdout);
    /* The cycle length varies pseudo-randomly (5-15 ms): a fixed cycle would phase-lock with
     * the sampling period and bias the measured split. */
    unsigned long seed = 12345;
    while (now(CLOCK_MONOTONIC) < stop) {
        seed = seed * 6364136223846793005UL + 1442695040888963407UL;
        double cycle = 0.005 + 0.010 * (double)(seed >> 11) / (double)(1UL << 53);
        hot_a(0.7 * cycle);
        hot_b(0.3 * cycle);
    }
    return 0;
}
