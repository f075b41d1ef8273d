/* A C program instrumented with profiler_probes.h: two threads each handle REQUESTS
 * requests; a request span has a db_query child span. Waits for a line on stdin (the profiler
 * is attached), then works, prints how many spans it made, and exits. */
#define PROFILER_PROBES_IMPLEMENTATION
#include "profiler_probes.h"

#include <pthread.h>
#include <stdio.h>

#ifndef REQUESTS
#define REQUESTS 300 /* per thread */
#endif

static volatile unsigned long sink;

PROFILER_SPAN_META(request_meta, "request", "probes_c");
PROFILER_SPAN_META(query_meta, "db_query", "probes_c::db");

__attribute__((noinline)) void run_query(unsigned long id) {
    unsigned long x = id;
    for (int i = 0; i < 300000; i++) x = x * 6364136223846793005UL + 1;
    sink = x;
}

__attribute__((noinline)) void handle(unsigned long id) {
    uint64_t request = profiler_span_start(&request_meta, 0);
    unsigned long x = id;
    for (int i = 0; i < 100000; i++) x = x * 2862933555777941757UL + 3;
    sink = x;
    uint64_t query = profiler_span_start(&query_meta, request);
    run_query(id);
    profiler_span_finish(query);
    profiler_span_finish(request);
}

static void *worker(void *arg) {
    (void)arg;
    for (int i = 0; i < REQUESTS; i++) handle(i);
    return NULL;
}

int main(void) {
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
    pthread_t a, b;
    pthread_create(&a, NULL, worker, NULL);
    pthread_create(&b, NULL, worker, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("request %d db_query %d\n", 2 * REQUESTS, 2 * REQUESTS);
    return 0;
}
