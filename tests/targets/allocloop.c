/* Allocator cost: N times malloc(SIZE) then free, one thread, timed by itself. Prints
 * "seconds S calls N". Waits for a line on stdin (the profiler is attached) before it starts.
 * Arguments: N (default 1000000), SIZE in bytes (default 64). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void *volatile keep;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    size_t size = argc > 2 ? (size_t)atol(argv[2]) : 64;
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    double t0 = now();
    for (long i = 0; i < n; i++) {
        void *p = malloc(size);
        if (!p) abort();
        keep = p;
        free(p);
    }
    double t1 = now();
    printf("seconds %.6f calls %ld\n", t1 - t0, n);
    return 0;
}
