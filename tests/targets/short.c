/* A short-lived process: spins in spin() for the milliseconds given (default 10) of its own
 * CPU time, then exits. Many of them, started one after the other, are what a build or a
 * test harness looks like to the profiler. */
#include <stdlib.h>
#include <time.h>

/* Tests build two versions of one program under another function name. */
#ifndef SPIN
#define SPIN spin
#endif

static volatile unsigned long sink;

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

__attribute__((noinline)) void SPIN(double seconds) {
    double end = cpu_now() + seconds;
    unsigned long x = sink;
    while (cpu_now() < end)
        for (int i = 0; i < 20000; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    sink = x;
}

int main(int argc, char **argv) {
    double ms = argc > 1 ? atof(argv[1]) : 10;
    SPIN(ms / 1000.0);
    return 0;
}
