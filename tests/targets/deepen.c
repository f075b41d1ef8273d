/* One thread whose stack deepens: it spins in a shallow call for a while, then ~10 KiB deeper
 * (40 frames of ~256 bytes) for the rest of its run.
 * Usage: deepen [shallow seconds] [deep seconds]  (default 1.5 and 30).
 * Prints "ready <pid>" once running. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

__attribute__((noinline)) void spin(double until) {
    unsigned long x = sink;
    while (now() < until)
        for (int i = 0; i < 20000; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    sink = x;
}

__attribute__((noinline)) void shallow(double until) { spin(until); }

__attribute__((noinline)) void bottom(double until) { spin(until); }

/* Not a tail call, and a frame the compiler cannot drop: the stack really grows. */
__attribute__((noinline)) void descend(int depth, double until) {
    volatile char frame[224];
    frame[depth % sizeof frame] = (char)depth;
    if (depth > 0)
        descend(depth - 1, until);
    else
        bottom(until);
    sink += frame[depth % sizeof frame];
}

int main(int argc, char **argv) {
    double shallow_s = argc > 1 ? atof(argv[1]) : 1.5;
    double deep_s = argc > 2 ? atof(argv[2]) : 30;
    printf("ready %d\n", getpid());
    fflush(stdout);
    double start = now();
    shallow(start + shallow_s);
    descend(40, start + shallow_s + deep_s);
    return 0;
}
