/* Lock wait cost: two threads take one mutex N times each around a critical section ten times
 * longer than the work between them (~2000 and ~200 multiplies), so that many lock calls find it taken and
 * wait in the kernel (futex). Prints "seconds S".
 * Waits for a line on stdin (the profiler is attached) before it starts. Argument: N
 * (default 20000). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long N = 20000;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static volatile unsigned long counter;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void *worker(void *arg) {
    (void)arg;
    unsigned long mine = 1;
    for (long i = 0; i < N; i++) {
        pthread_mutex_lock(&lock);
        for (int k = 0; k < 2000; k++) counter = counter * 6364136223846793005UL + 1;
        pthread_mutex_unlock(&lock);
        for (int k = 0; k < 200; k++) mine = mine * 6364136223846793005UL + 1;
    }
    counter += mine;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) N = atol(argv[1]);
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    double t0 = now();
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    printf("seconds %.6f\n", now() - t0);
    return 0;
}
