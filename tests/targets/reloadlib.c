/* The library reload.c loads, unloads and loads again in another build: built twice with
 * -DHOT=hot_in_a and -DHOT=hot_in_b, names of one length, so both files have one layout and
 * the same offsets hold each one's hot function. */
#include <time.h>

static volatile unsigned long sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void HOT(double seconds) {
    double end = now() + seconds;
    while (now() < end)
        for (unsigned long i = 0; i < 100000; i++) sink += i;
}
