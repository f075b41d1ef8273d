/* The library reload.c loads, unloads and loads again in another build: built twice with
 * -DHOT=hot_in_a -DPAD_FIRST and with -DHOT=hot_in_b, names of one length. Both builds are
 * the same size, so the second lands where the first was, but their functions are in turn:
 * where the second has its hot function, the first has pad(), whose frame is 4 KiB larger.
 * Names or unwind tables of the first build used for the second are plainly wrong. */
#include <time.h>

static volatile unsigned long sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

#define PAD_FUNCTION                                                        \
    __attribute__((noinline, used)) void pad(void) {                      \
        volatile char frame[4096];                                         \
        frame[0] = 1;                                                      \
        __asm__ volatile(".skip 1024, 0x90" ::: "memory");                 \
        frame[4095] = frame[0];                                            \
    }

#ifdef PAD_FIRST
PAD_FUNCTION
#endif

__attribute__((noinline)) void HOT(double seconds) {
    double end = now() + seconds;
    while (now() < end)
        for (unsigned long i = 0; i < 100000; i++) sink += i;
}

#ifndef PAD_FIRST
PAD_FUNCTION
#endif
