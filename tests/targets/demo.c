/* The demo workload: a toy request server with spans, CPU hot spots and blocking, so every
 * output of the profiler has something to show.
 * Two worker threads serve requests. Each request is a `request` span with three children:
 *   parse     CPU (parse_request)
 *   db_query  CPU (lookup → hash_key), then a blocking round trip to a database thread over
 *             a pipe (2 ms; every 16th query is slow, 20 ms: the tail the span report shows)
 *   render    CPU (render)
 * gcc 12 gives a true leaf no frame even with -mno-omit-leaf-frame-pointer, so a sample in it
 * would lose its caller to a frame-pointer walk: each spinning function also makes a call
 * (to `count`), which gives it a frame.
 * Usage: demo [seconds] (default 10). */
#define PROFILER_PROBES_IMPLEMENTATION
#include "profiler_probes.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;
static double stop_at;

PROFILER_SPAN_META(request_meta, "request", "demo");
PROFILER_SPAN_META(parse_meta, "parse", "demo");
PROFILER_SPAN_META(query_meta, "db_query", "demo::db");
PROFILER_SPAN_META(render_meta, "render", "demo");

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define CHURN(x, rounds) \
    for (int i = 0; i < (rounds); i++) x = x * 6364136223846793005UL + 1442695040888963407UL

__attribute__((noinline)) void count(unsigned long id) { sink += id; }

__attribute__((noinline)) void parse_request(unsigned long id) { CHURN(id, 150000); count(id); }
__attribute__((noinline)) void hash_key(unsigned long id) { CHURN(id, 400000); count(id); }
__attribute__((noinline)) void lookup(unsigned long id) { hash_key(id); }
__attribute__((noinline)) void render(unsigned long id) { CHURN(id, 250000); count(id); }

/* The database: one thread answering each worker's pipe after a delay. */
struct db_conn {
    int request[2], reply[2];
};

static void *database(void *arg) {
    struct db_conn *c = arg;
    unsigned char slow;
    while (read(c->request[0], &slow, 1) == 1) {
        struct timespec d = {0, slow ? 20000000 : 2000000};
        nanosleep(&d, NULL);
        if (write(c->reply[1], &slow, 1) != 1) abort();
    }
    return NULL;
}

__attribute__((noinline)) void wait_for_db(struct db_conn *c, unsigned long id) {
    unsigned char slow = id % 16 == 15;
    if (write(c->request[1], &slow, 1) != 1) abort();
    if (read(c->reply[0], &slow, 1) != 1) abort();
}

__attribute__((noinline)) void db_query(struct db_conn *c, unsigned long id, uint64_t parent) {
    uint64_t span = profiler_span_start(&query_meta, parent);
    lookup(id);
    wait_for_db(c, id);
    profiler_span_finish(span);
}

__attribute__((noinline)) void handle_request(struct db_conn *c, unsigned long id) {
    uint64_t request = profiler_span_start(&request_meta, 0);
    uint64_t span = profiler_span_start(&parse_meta, request);
    parse_request(id);
    profiler_span_finish(span);
    db_query(c, id, request);
    span = profiler_span_start(&render_meta, request);
    render(id);
    profiler_span_finish(span);
    profiler_span_finish(request);
}

static void *serve(void *arg) {
    struct db_conn *c = arg;
    for (unsigned long id = 0; now() < stop_at; id++) handle_request(c, id);
    close(c->request[1]);
    return NULL;
}

int main(int argc, char **argv) {
    stop_at = now() + (argc > 1 ? atof(argv[1]) : 10);
    struct db_conn conns[2];
    pthread_t workers[2], dbs[2];
    for (int i = 0; i < 2; i++) {
        if (pipe(conns[i].request) || pipe(conns[i].reply)) return 1;
        pthread_create(&dbs[i], NULL, database, &conns[i]);
        pthread_create(&workers[i], NULL, serve, &conns[i]);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(workers[i], NULL);
        pthread_join(dbs[i], NULL);
    }
    return 0;
}
