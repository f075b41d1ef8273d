/* A burst of SPANS spans (begin, enter, exit, end each) as fast as one thread can make them,
 * to check that none is lost with the profiler's default settings. Waits for a line on
 * stdin, prints the span count and how long the burst took. */
#define PROFILER_PROBES_IMPLEMENTATION
#include "profiler_probes.h"

#include <stdio.h>
#include <time.h>

#define SPANS 100000

PROFILER_SPAN_META(burst_meta, "burst", "burst");

int main(void) {
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < SPANS; i++) profiler_span_finish(profiler_span_start(&burst_meta, 0));
    clock_gettime(CLOCK_MONOTONIC, &b);
    double secs = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
    printf("burst %d seconds %.3f\n", SPANS, secs);
    return 0;
}
