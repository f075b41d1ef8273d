/* The cost of a `--span-fn` probe pair: CALLS calls of one tiny function on one thread, as
 * fast as they go. Waits for a line on stdin (the profiler is attached), prints the call count
 * and how long the calls took. noipa keeps gcc from cloning or renaming `traced`, so the
 * symbol the probe names is the one that runs. */
#include <stdio.h>
#include <time.h>

#define CALLS 100000

static volatile unsigned long sink;

__attribute__((noinline, noipa)) unsigned long traced(unsigned long x) {
    return x * 6364136223846793005UL + 1442695040888963407UL;
}

int main(void) {
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    unsigned long x = 1;
    for (int i = 0; i < CALLS; i++) x = traced(x);
    clock_gettime(CLOCK_MONOTONIC, &b);
    sink = x;
    double secs = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
    printf("calls %d seconds %.6f\n", CALLS, secs);
    return 0;
}
