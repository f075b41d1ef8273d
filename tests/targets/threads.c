/* Two named threads, each spinning in its own function for the whole run.
 * Usage: threads [seconds]. Prints "ready <pid>" once both threads run. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double stop_at;
static volatile unsigned long sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

__attribute__((noinline)) void worker_one(void) {
    unsigned long x = 1;
    while (now() < stop_at)
        for (int i = 0; i < 20000; i++) x = x * 6364136223846793005UL + 1;
    sink = x;
}

__attribute__((noinline)) void worker_two(void) {
    unsigned long x = 2;
    while (now() < stop_at)
        for (int i = 0; i < 20000; i++) x = x * 2862933555777941757UL + 3;
    sink = x;
}

static void *run(void *arg) {
    if (arg) worker_one(); else worker_two();
    return NULL;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 30;
    stop_at = now() + seconds;
    pthread_t a, b;
    pthread_create(&a, NULL, run, (void *)1);
    pthread_setname_np(a, "worker-one");
    pthread_create(&b, NULL, run, NULL);
    pthread_setname_np(b, "worker-two");
    printf("ready %d\n", getpid());
    fflush(stdout);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return 0;
}
