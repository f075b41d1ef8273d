/* CPU-bound work done by short-lived threads: one after the other, each spins ~30 ms of its
 * own CPU time and exits, for the seconds given (default 30). What the coverage check cannot
 * read per thread (a thread that ended has no schedstat left) and must get process-wide.
 * Prints "ready <pid>" once running. */
#include <pthread.h>
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

static void *spin(void *arg) {
    (void)arg;
    double end = now(CLOCK_THREAD_CPUTIME_ID) + 0.03;
    unsigned long x = sink;
    while (now(CLOCK_THREAD_CPUTIME_ID) < end)
        for (int i = 0; i < 20000; i++) x = x * 6364136223846793005UL + 1;
    sink = x;
    return NULL;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 30;
    double stop = now(CLOCK_MONOTONIC) + seconds;
    printf("ready %d\n", getpid());
    fflush(stdout);
    while (now(CLOCK_MONOTONIC) < stop) {
        pthread_t t;
        if (pthread_create(&t, NULL, spin, NULL) != 0)
            return 1;
        pthread_join(t, NULL);
    }
    return 0;
}
