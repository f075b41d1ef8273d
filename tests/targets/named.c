/* One CPU-bound program per name: built several times with -DHOT=NAME, each copy spends its
 * time in a function of its own name, so a recording of several of them can be checked per
 * process (root frames, summary table, Perfetto tracks). Usage: named [seconds] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifndef HOT
#define HOT burn
#endif

static volatile unsigned long sink;

/* Many steps per call, so the clock read between calls is a small share of the samples. */
__attribute__((noinline)) unsigned long HOT(unsigned long x) {
    for (int i = 0; i < 2000000; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    return x;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 1.0;
    double end = now() + secs;
    unsigned long x = 1;
    while (now() < end) x = HOT(x);
    sink = x;
    return 0;
}
