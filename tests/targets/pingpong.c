/* Context-switch-heavy load for the off-CPU overhead bench: two threads bounce a byte over a
 * pair of pipes ROUNDS times, so each round is two blocking reads and two wake-ups. Prints
 * "ready", waits for a line on stdin, then prints its own CPU time and wall time in ns. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int ping[2], pong[2];
static long ROUNDS = 100000;

static void *echo(void *arg) {
    (void)arg;
    char c;
    for (long i = 0; i < ROUNDS; i++) {
        if (read(ping[0], &c, 1) != 1) abort();
        if (write(pong[1], &c, 1) != 1) abort();
    }
    return NULL;
}

static long long ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc > 1) ROUNDS = atol(argv[1]);
    if (pipe(ping) || pipe(pong)) return 1;
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    long long wall = ns(CLOCK_MONOTONIC), cpu = ns(CLOCK_PROCESS_CPUTIME_ID);
    pthread_t t;
    pthread_create(&t, NULL, echo, NULL);
    char c = 'x';
    for (long i = 0; i < ROUNDS; i++) {
        if (write(ping[1], &c, 1) != 1) abort();
        if (read(pong[0], &c, 1) != 1) abort();
    }
    pthread_join(t, NULL);
    printf("cpu_ns %lld wall_ns %lld rounds %ld\n", ns(CLOCK_PROCESS_CPUTIME_ID) - cpu,
           ns(CLOCK_MONOTONIC) - wall, ROUNDS);
    return 0;
}
