/* An uninstrumented program for --span-fn: handle_request() calls parse() and the recursive
 * fib(). Waits for a line on stdin (the profiler is attached), does REQUESTS requests on two
 * threads, prints the exact number of calls of each function, and exits. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef REQUESTS
#define REQUESTS 500 /* per thread */
#endif
#define FIB_N 10

static long fib_calls[2];
static volatile unsigned long sink;

__attribute__((noinline)) long fib(int n, int t) {
    fib_calls[t]++;
    return n < 2 ? n : fib(n - 1, t) + fib(n - 2, t);
}

__attribute__((noinline)) void parse(unsigned long id) {
    unsigned long x = id;
    for (int i = 0; i < 200000; i++) x = x * 6364136223846793005UL + 1;
    sink = x;
}

__attribute__((noinline)) void handle_request(unsigned long id, int t) {
    parse(id);
    sink += fib(FIB_N, t);
}

static void *worker(void *arg) {
    int t = (int)(long)arg;
    for (int i = 0; i < REQUESTS; i++) handle_request(i, t);
    return NULL;
}

int main(void) {
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    pthread_t a, b;
    pthread_create(&a, NULL, worker, (void *)0);
    pthread_create(&b, NULL, worker, (void *)1);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("handle_request %d fib %ld\n", 2 * REQUESTS, fib_calls[0] + fib_calls[1]);
    return 0;
}
