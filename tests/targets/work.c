/* A fixed amount of CPU work (not a fixed time): WORK_ITERS iterations on each of THREADS
 * threads. Prints the CPU and wall time it took, measured by itself, so slowdowns under a
 * profiler compare like with like. Usage: work [threads] [iterations, millions] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static long iters;
static volatile unsigned long sink;

__attribute__((noinline)) unsigned long step(unsigned long x) {
    return x * 6364136223846793005UL + 1442695040888963407UL;
}

__attribute__((noinline)) void *spin(void *arg) {
    unsigned long x = (unsigned long)arg;
    for (long i = 0; i < iters; i++) x = step(x);
    sink = x;
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    iters = (argc > 2 ? atol(argv[2]) : 300) * 1000000L;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    pthread_t t[64];
    for (int i = 0; i < threads && i < 64; i++) pthread_create(&t[i], NULL, spin, (void *)(long)i);
    for (int i = 0; i < threads && i < 64; i++) pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
                 ru.ru_stime.tv_usec * 1e-6;
    printf("cpu_s %.6f wall_s %.6f\n", cpu, (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9);
    return 0;
}
