/* The demo workload: a toy request loop with a recognisable call tree for the flame graph.
 * gcc 12 gives a true leaf no frame even with -mno-omit-leaf-frame-pointer, so a sample in it
 * would lose its caller to a frame-pointer walk: each spinning function also makes a call
 * (to `count`), which gives it a frame.
 * main → serve → handle_request → {parse_request 25%, lookup → hash_key 45%, render 30%}.
 * Usage: demo [seconds] (default 10). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile unsigned long sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define CHURN(x, rounds) \
    for (int i = 0; i < (rounds); i++) x = x * 6364136223846793005UL + 1442695040888963407UL

__attribute__((noinline)) void count(unsigned long id) { sink += id; }

__attribute__((noinline)) void parse_request(unsigned long id) { CHURN(id, 25000); count(id); }
__attribute__((noinline)) void hash_key(unsigned long id) { CHURN(id, 45000); count(id); }
__attribute__((noinline)) void lookup(unsigned long id) { hash_key(id); }
__attribute__((noinline)) void render(unsigned long id) { CHURN(id, 30000); count(id); }

__attribute__((noinline)) void handle_request(unsigned long id) {
    parse_request(id);
    lookup(id);
    render(id);
}

__attribute__((noinline)) void serve(double seconds) {
    double stop = now() + seconds;
    for (unsigned long id = 0; now() < stop; id++) handle_request(id);
}

int main(int argc, char **argv) {
    serve(argc > 1 ? atof(argv[1]) : 10);
    return 0;
}
