/* One thread that renames itself halfway through its work, pinned to one CPU so that all its
 * samples come from the same CPU. Usage: rename. Prints "ready <pid>", waits for a line on
 * stdin, runs the thread (0.5 s of CPU as "phase-one", then 0.5 s as "phase-two") and exits. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

__attribute__((noinline)) void spin(double seconds) {
    double end = cpu_now() + seconds;
    unsigned long x = sink;
    while (cpu_now() < end)
        for (int i = 0; i < 20000; i++) x = x * 6364136223846793005UL + 1;
    sink = x;
}

static void *worker(void *arg) {
    (void)arg;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    sched_setaffinity(0, sizeof one, &one);
    prctl(PR_SET_NAME, "phase-one");
    spin(0.5);
    prctl(PR_SET_NAME, "phase-two");
    spin(0.5);
    return NULL;
}

int main(void) {
    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_join(t, NULL);
    printf("done\n");
    return 0;
}
