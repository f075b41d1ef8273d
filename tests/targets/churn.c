/* Thread churn for --off-cpu: starts THREADS short-lived threads one after the other; each
 * naps 50 µs (one blocking switch-out) and exits. More threads than the kernel's table of
 * switched-out threads holds (16384), so an exiting thread that left an entry behind would
 * fill it. Waits for a line on stdin, then prints "threads N". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void *nap(void *arg) {
    (void)arg;
    struct timespec d = {0, 50000};
    nanosleep(&d, NULL);
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 20000;
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, nap, NULL)) return 1;
        pthread_join(t, NULL);
    }
    printf("threads %d\n", threads);
    return 0;
}
